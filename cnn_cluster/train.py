"""The per-worker training loop run by Ray Train. No Tune in here.

The pure-torch pieces (batches, augmentation, schedule, one epoch, evaluation)
are plain functions so a bare loop (bench/train_throughput.py) runs the very
same code; ``train_loop`` wraps them with Ray Train's report/checkpoint calls.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import os
import socket
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from . import augment
from .cluster import node_id
from .config import Experiment, TrainConfig
from .models import build_model

CHECKPOINT_FILE = "state.pt"
TEST_FILES = ("test_index.npy", "test_probs.npy")  # a tested trial's rows and probabilities, beside it


@dataclass
class Arrays:
    """The dataset as plain arrays: what travels through the object store."""

    images: np.ndarray  # uint8 (N, H, W, 3)
    labels: np.ndarray  # int64 (N,)
    split: np.ndarray  # uint8 (N,): 0 train, 1 val, 2 test
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    num_classes: int

    @classmethod
    def of(cls, data: Any) -> "Arrays":
        """A packed dataset's arrays (``data.PackedDataset``; its images become one in-memory array)."""
        return cls(np.asarray(data.images), data.labels, data.split, data.mean, data.std, data.num_classes)


# --------------------------------------------------------------------------- pure torch


# A GPU keeps the images in its memory when they take at most this share of what is free.
GPU_DATA_SHARE = 0.5


def gather(images: np.ndarray | torch.Tensor, idx: np.ndarray, device: torch.device) -> torch.Tensor:
    """The uint8 NHWC images ``idx`` on ``device``.

    Images already placed on the device are indexed there (no host copy); from the host,
    a GPU gets them through pinned memory so the copy overlaps with compute.
    """
    if isinstance(images, torch.Tensor):
        return images[torch.from_numpy(idx).to(images.device)]
    batch = torch.from_numpy(np.ascontiguousarray(images[idx]))
    if device.type == "cuda":
        batch = batch.pin_memory()
    return batch.to(device, non_blocking=True)


def norm_stats(mean: tuple, std: tuple, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The dataset's per-channel mean and std, shaped for ``to_input``."""
    return (torch.tensor(mean, device=device).view(1, 3, 1, 1), torch.tensor(std, device=device).view(1, 3, 1, 1))


def to_input(batch: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """The one normalisation: uint8 NHWC -> normalised float NCHW in channels_last memory (no
    copy of the layout); for training, prediction and the occlusion stage alike."""
    x = batch.permute(0, 3, 1, 2).float().div_(255.0)
    return x.sub_(mean).div_(std)


def place(arrays: Arrays, device: torch.device) -> Arrays:
    """On a GPU, move the images into its memory once, where they fit; elsewhere, as they are."""
    if device.type != "cuda":
        return arrays
    free, _ = torch.cuda.mem_get_info(device)
    if arrays.images.nbytes > GPU_DATA_SHARE * free:
        return arrays
    with warnings.catch_warnings():  # the object store's arrays are read-only; we only read them
        warnings.simplefilter("ignore", UserWarning)
        images = torch.from_numpy(arrays.images).to(device)
    return dataclasses.replace(arrays, images=images)


@functools.cache  # /proc/cpuinfo once per process, not once per epoch
def native_bf16(device: torch.device) -> bool:
    """The hardware computes bf16 itself: a GPU with bf16, or a CPU with AVX512-BF16 or AMX (on other
    CPUs bf16 is emulated, and slower than fp32)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):  # not Linux: no way to tell without private torch calls
        return False
    return bool({"avx512_bf16", "amx_bf16"} & set(flags.split()))


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` becomes bf16 where the hardware has it natively, else fp32."""
    if precision != "auto":
        return precision
    return "bf16" if native_bf16(device) else "fp32"


def autocast(device: torch.device, precision: str = "fp32") -> contextlib.AbstractContextManager:
    """bf16 autocast for ``precision`` bf16 (resolved); full precision otherwise."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def lr_factor(step: int, total: int, warmup: int, cosine: bool) -> float:
    """Multiplier of the base rate: linear warm-up, then constant or cosine to zero."""
    if step < warmup:
        return (step + 1) / warmup
    if not cosine:
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay, nesterov=True)
    # AdamW: decoupled decay; with weight_decay 0 it is exactly Adam.
    return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


def epoch_batches(indices: np.ndarray, batch: int, seed: int, epoch: int, rank: int, world: int) -> list[np.ndarray]:
    """This rank's shuffled batches; every rank gets the same number (DDP needs it)."""
    rng = np.random.default_rng([seed, epoch])
    order = indices[rng.permutation(len(indices))]
    per_rank = len(order) // world
    mine = order[rank * per_rank:(rank + 1) * per_rank]
    n = len(mine) // batch  # drop the ragged tail: equal steps on every rank
    return [np.sort(mine[i * batch:(i + 1) * batch]) for i in range(max(n, 1 if len(mine) else 0))]


def make_ema(model: nn.Module, cfg: TrainConfig) -> Optional[AveragedModel]:
    """The exponential moving average of the weights (and batch-norm buffers) that validation and test
    use, when ``cfg.ema`` > 0: torch's own ``AveragedModel`` with its EMA rule."""
    if cfg.ema <= 0:
        return None
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema), use_buffers=True)


def train_epoch(model: nn.Module, opt: torch.optim.Optimizer, arrays: Arrays, batches: list[np.ndarray],
                cfg: TrainConfig, step0: int, total_steps: int, device: torch.device,
                generator: torch.Generator,
                on_batch: Optional[Callable[[int, int, float, int], None]] = None,
                ema: Optional[AveragedModel] = None) -> tuple[float, float, int]:
    """One pass over ``batches``; returns summed loss, correct count and images seen.

    ``on_batch(done, total, loss_sum, seen)`` follows every step (live progress); ``ema`` (of the
    unwrapped model) is updated after every step.
    """
    precision = resolve_precision(cfg.precision, device)
    mean, std = norm_stats(arrays.mean, arrays.std, device)
    mixer = augment.batch_mixer(cfg, arrays.num_classes)
    model.train()
    loss_sum, correct, seen = 0.0, 0, 0
    for i, idx in enumerate(batches):
        for group in opt.param_groups:
            group["lr"] = cfg.lr * lr_factor(step0 + i, total_steps, cfg.warmup_epochs * len(batches),
                                             cfg.scheduler == "cosine")
        x = to_input(gather(arrays.images, idx, device), mean, std)
        if cfg.color_jitter > 0:
            x = augment.color_jitter(x, generator, cfg.color_jitter, mean, std)
        x = augment.geometric(x, generator, cfg)
        y = torch.from_numpy(arrays.labels[idx]).to(device, non_blocking=True)
        x, target = mixer(x, y) if mixer is not None else (x, y)  # soft targets where mixed
        with autocast(device, precision):
            logits = model(x)
            loss = F.cross_entropy(logits.float(), target, label_smoothing=cfg.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if ema is not None:
            ema.update_parameters(_unwrapped(model))
        loss_sum += float(loss.detach()) * len(idx)
        correct += int((logits.argmax(1) == y).sum())
        seen += len(idx)
        if on_batch is not None:
            on_batch(i + 1, len(batches), loss_sum, seen)
    return loss_sum, correct, seen


def _unwrapped(model: nn.Module) -> nn.Module:
    """The model a DistributedDataParallel wrapper holds, or the model itself."""
    return getattr(model, "module", model)


class LiveProgress:
    """Rank 0's place inside the running epoch, in a small JSON file the sweep's progress reads
    (``RunDir.live``): no Ray call, no barrier, at most one write per ``every_s``."""

    def __init__(self, path: Optional[str], epochs: int, world: int, every_s: float = 1.0):
        self.path = Path(path) if path else None
        self.epochs, self.world, self.every_s = epochs, world, every_s
        self.epoch, self.t0, self.last = 0, time.perf_counter(), 0.0

    def start(self, epoch: int) -> None:
        self.epoch, self.t0 = epoch, time.perf_counter()

    def __call__(self, done: int, total: int, loss_sum: float, seen: int) -> None:
        now = time.perf_counter()
        if self.path is None or (now - self.last < self.every_s and done < total):
            return
        self.last = now
        elapsed = now - self.t0
        state = {"epoch": self.epoch, "epochs": self.epochs, "batch": done, "batches": total,
                 "loss": loss_sum / max(seen, 1), "images_per_s": seen * self.world / max(elapsed, 1e-9),
                 "epoch_seconds": elapsed, "time": time.time()}
        _write_atomic(self.path, json.dumps(state))


@torch.no_grad()
def predict(model: nn.Module, arrays: Arrays, indices: np.ndarray, device: torch.device,
            batch: int = 256, precision: str = "fp32", flip: bool = False) -> torch.Tensor:
    """Softmax probabilities for ``indices`` (eval mode), on the CPU; ``precision`` resolved;
    ``flip``: the mean of the image's and its mirror's probabilities (test-time augmentation)."""
    mean, std = norm_stats(arrays.mean, arrays.std, device)
    model.eval()
    out = []
    for i in range(0, len(indices), batch):
        x = to_input(gather(arrays.images, indices[i:i + batch], device), mean, std)
        with autocast(device, precision):
            probs = F.softmax(model(x).float(), 1)
            if flip:
                probs = (probs + F.softmax(model(x.flip(3)).float(), 1)) / 2
        out.append(probs.cpu())
    return torch.cat(out) if out else torch.zeros(0, arrays.num_classes)


def initial_model(exp: Experiment, arrays: Arrays, device: torch.device) -> nn.Module:
    """A trial's starting point: ``models.build_model`` seeded by the recipe (the same weights on
    every rank and restart), on ``device`` in channels_last memory (faster convolutions)."""
    torch.manual_seed(exp.train.seed)
    model = build_model(exp, arrays.num_classes, arrays.images.shape[1])
    return model.to(device, memory_format=torch.channels_last)


# --------------------------------------------------------------------------- Ray Train


def train_loop(config: dict) -> None:
    """Ray Train worker: train, report every epoch, evaluate the best epoch on test (unless
    ``config["test"]`` is false: a search trial)."""
    import ray
    import ray.train
    import ray.train.torch as rtt

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    if rank == 0 and config.get("placement_group_file"):
        _record_placement_group(Path(config["placement_group_file"]))
    torch.set_num_threads(max(1, int(config["threads"])))
    exp = Experiment.model_validate(config["experiment"])
    arrays: Arrays = ray.get(config["data"][0])  # zero-copy view of the node's object store
    device = rtt.get_device()
    arrays = place(arrays, device)
    model = initial_model(exp, arrays, device)
    opt = make_optimizer(model, exp.train)
    ema = make_ema(model, exp.train)
    scored = ema.module if ema is not None else model  # the weights validation and test see
    precision = resolve_precision(exp.train.precision, device)  # weights and optimizer state stay fp32
    state = _resume(model, opt, ema)
    ddp = rtt.prepare_model(model, move_to_device=False) if world > 1 else model
    train_idx, val_idx = np.flatnonzero(arrays.split == 0), np.flatnonzero(arrays.split == 1)
    per_rank_batch = max(1, exp.train.batch_size // world)
    steps = len(epoch_batches(train_idx, per_rank_batch, 0, 0, rank, world))
    gen = torch.Generator().manual_seed(exp.train.seed * 1000 + rank)
    live = LiveProgress(config.get("live_file") if rank == 0 else None, exp.train.epochs, world)
    for epoch in range(state["epoch"] + 1, exp.train.epochs + 1):
        gen.manual_seed(exp.train.seed * 100_003 + epoch * 1009 + rank)
        torch.manual_seed(exp.train.seed * 100_003 + epoch * 1009 + rank)  # dropout, mixup: a resumed epoch repeats
        t0 = time.perf_counter()
        live.start(epoch)
        batches = epoch_batches(train_idx, per_rank_batch, exp.train.seed, epoch, rank, world)
        loss, correct, seen = train_epoch(ddp, opt, arrays, batches, exp.train, (epoch - 1) * steps,
                                          exp.train.epochs * steps, device, gen, on_batch=live, ema=ema)
        train_s = time.perf_counter() - t0
        tr = _all_sum([loss, correct, seen], device)
        va = _evaluate(scored, arrays, val_idx[rank::world], device, precision, exp.train.test_time_flip)
        metrics = {"epoch": epoch, "train_loss": tr[0] / tr[2], "train_acc": tr[1] / tr[2],
                   "val_loss": va[0] / max(va[2], 1), "val_acc": va[1] / max(va[2], 1),
                   "seconds": time.perf_counter() - t0, "images_per_s": tr[2] / train_s, "final": 0}
        if metrics["val_acc"] > state["best_val_acc"] or state["best_epoch"] == 0:
            state.update(best_val_acc=metrics["val_acc"], best_epoch=epoch,
                         best_model={k: v.detach().cpu().clone() for k, v in scored.state_dict().items()})
        state["epoch"] = epoch
        state["history"] = state["history"] + [metrics]  # in the checkpoint: each epoch exactly once
        _report(metrics, state, model, opt, rank, ema=ema)
    where = _rank_nodes(world)
    if config.get("test", True):
        _final_test(model, opt, arrays, state, device, rank, world, precision, where, exp.train.test_time_flip)
    else:  # a search trial: the test split stays untouched until the search has picked its best
        _report({"epoch": state["epoch"], "final": 1, "best_epoch": state["best_epoch"],
                 "best_val_acc": state["best_val_acc"], "val_acc": state["best_val_acc"], "precision": precision,
                 **where}, state, model, opt, rank)


def _rank_nodes(world: int) -> dict[str, list[str]]:
    """The host name and Ray node id of every rank, in rank order (a trial may span nodes)."""
    mine = (socket.gethostname(), node_id())
    parts = [mine] * world
    if world > 1:
        torch.distributed.all_gather_object(parts, mine)
    return {"rank_nodes": [p[0] for p in parts], "rank_node_ids": [p[1] for p in parts]}


def _record_placement_group(path: Path) -> None:
    """Where the sweep can find this run's placement group, should the trial driver die (sweep.py)."""
    import ray.util

    pg = ray.util.get_current_placement_group()
    if pg is None:
        return
    _write_atomic(path, pg.id.hex())


def _write_atomic(path: Path, text: str) -> None:
    """A small side file a reader in another process never sees half-written (the sweep reads it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(text)
    tmp.replace(path)


def _evaluate(model: nn.Module, arrays: Arrays, idx: np.ndarray, device: torch.device,
              precision: str, flip: bool = False) -> list[float]:
    probs = predict(model, arrays, idx, device, precision=precision, flip=flip)
    y = torch.from_numpy(arrays.labels[idx])
    loss = float(F.nll_loss(probs.clamp_min(1e-12).log(), y, reduction="sum")) if len(idx) else 0.0
    correct = int((probs.argmax(1) == y).sum()) if len(idx) else 0
    return _all_sum([loss, correct, len(idx)], device)


def _all_sum(values: list[float], device: torch.device) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(t)
    return t.tolist()


def _resume(model: nn.Module, opt: torch.optim.Optimizer, ema: Optional[AveragedModel] = None) -> dict:
    """Restore from Ray Train's latest checkpoint, if the trial is restarting."""
    import ray.train

    ckpt = ray.train.get_checkpoint()
    state = {"epoch": 0, "best_val_acc": -1.0, "best_epoch": 0, "best_model": None, "history": []}
    if ckpt is None:
        return state
    with ckpt.as_directory() as d:
        saved = torch.load(Path(d) / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
    model.load_state_dict(saved["model"])
    opt.load_state_dict(saved["optimizer"])
    if ema is not None and saved.get("ema") is not None:
        ema.load_state_dict(saved["ema"])
    state.update({k: saved[k] for k in ("epoch", "best_val_acc", "best_epoch", "best_model", "history")})
    return state


def _report(metrics: dict, state: dict, model: nn.Module, opt: torch.optim.Optimizer, rank: int,
            extra: Optional[dict] = None, ema: Optional[AveragedModel] = None) -> None:
    """Every rank reports (a barrier); rank 0 alone attaches the checkpoint."""
    import ray.train

    # "pid" would be overwritten: Tune fills that key with the trial driver's pid.
    metrics = {**metrics, "node": socket.gethostname(), "node_id": node_id(), "worker_pid": os.getpid()}
    if rank != 0:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as d:
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                    "ema": ema.state_dict() if ema is not None else None, **state}, Path(d) / CHECKPOINT_FILE)
        for name, arr in (extra or {}).items():
            np.save(Path(d) / name, arr)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))


def _final_test(model: nn.Module, opt: torch.optim.Optimizer, arrays: Arrays, state: dict, device: torch.device,
                rank: int, world: int, precision: str, where: dict, flip: bool = False) -> None:
    """Evaluate the best-validation weights on the test split; rank 0 keeps all predictions."""

    model.load_state_dict(state["best_model"])
    test_idx = np.flatnonzero(arrays.split == 2)
    mine = test_idx[rank::world]
    probs = predict(model, arrays, mine, device, precision=precision, flip=flip)
    parts = [None] * world
    if world > 1:
        torch.distributed.all_gather_object(parts, (mine, probs.numpy()))
    else:
        parts = [(mine, probs.numpy())]
    idx = np.concatenate([p[0] for p in parts])
    allp = np.concatenate([p[1] for p in parts])
    order = np.argsort(idx)
    idx, allp = idx[order], allp[order]
    correct = int((allp.argmax(1) == arrays.labels[idx]).sum()) if len(idx) else 0
    metrics = {"epoch": state["epoch"], "final": 1, "best_epoch": state["best_epoch"],
               "best_val_acc": state["best_val_acc"], "test_acc": correct / max(len(idx), 1),
               "test_images": len(idx), "precision": precision, **where}
    _report(metrics, state, model, opt, rank, extra=dict(zip(TEST_FILES, (idx, allp.astype(np.float32)))))
