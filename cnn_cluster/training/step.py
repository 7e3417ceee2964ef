"""The pure-torch training pieces: batches, normalisation, precision, the optimizer, the weight
average, one epoch, prediction. No Ray in here: a bare loop (bench/recipe.py) runs the very same code
that ``worker.train_loop`` wraps with Ray Train's report and checkpoint calls.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel

from ..config import Experiment, TrainConfig
from ..models import build_model
from . import augment


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
    use, when ``cfg.ema`` > 0: torch's own ``AveragedModel``, with the decay warmed up."""
    if cfg.ema <= 0:
        return None
    return AveragedModel(model, multi_avg_fn=ema_warmup(cfg.ema), use_buffers=True)


def ema_decay(decay: float, updates: int) -> float:
    """The decay of the ``updates``-th update (0 first): ``min(decay, (1 + n) / (10 + n))``, the
    warm-up of TensorFlow's and timm's EMA. A constant 0.999 would keep 0.999^n of the random initial
    weights: 53 % after a full-data epoch of 625 steps, which cost the search's first EMA trials
    20 points of validation accuracy at epoch 2; warmed up, the initial weights are gone in ~100 steps."""
    return min(decay, (1 + updates) / (10 + updates))


def ema_warmup(decay: float) -> Callable:
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged: torch.Tensor) -> None:
        weight = 1.0 - ema_decay(decay, int(num_averaged))
        for a, c in zip(averaged, current):
            if a.is_floating_point():
                a.lerp_(c, weight)
            else:  # batch norm's num_batches_tracked: a count, not a weight to average
                a.copy_(c)
    return update


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
