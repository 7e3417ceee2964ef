"""The per-worker training loop run by Ray Train: train, report every epoch, checkpoint, test the
best epoch. No Tune in here; the math is ``step``'s.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel

from ..cluster import node_id
from ..config import Experiment
from ..run.io import write_text
from ..run.reports import EpochReport, FinalReport
from .step import (Arrays, epoch_batches, initial_model, make_ema, make_optimizer, place, predict, resolve_precision,
                   train_epoch)

CHECKPOINT_FILE = "state.pt"


TEST_FILES = ("test_index.npy", "test_probs.npy")  # a tested trial's rows and probabilities, beside it


@dataclass(frozen=True)
class WorkerArgs:
    """What a trial's driver hands each of its Ray Train workers (Ray Train takes a dict: ``as_config``
    wraps it, ``of`` unwraps it, so a renamed field fails here rather than reading as missing)."""

    experiment: dict  # the recipe, as Experiment.model_dump(mode="json"); validated again in the worker
    data: list  # [the ObjectRef of the sweep's Arrays]: in a list, so Ray hands over the reference
    threads: int  # torch threads: the worker's CPUs
    test: bool = True  # false in a search: the test split waits until the search picked its best
    placement_group_file: Optional[str] = None  # rank 0 writes its placement group's id here
    live_file: Optional[str] = None  # rank 0's place inside its epoch, for the progress lines

    def as_config(self) -> dict:
        return {"args": self}

    @classmethod
    def of(cls, config: dict) -> "WorkerArgs":
        return config["args"]


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
        write_text(self.path, json.dumps(state))


def train_loop(config: dict) -> None:
    """Ray Train worker: train, report every epoch, evaluate the best epoch on test (unless
    ``WorkerArgs.test`` is false: a search trial)."""
    import ray
    import ray.train
    import ray.train.torch as rtt

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    args = WorkerArgs.of(config)
    if rank == 0 and args.placement_group_file:
        _record_placement_group(Path(args.placement_group_file))
    torch.set_num_threads(max(1, args.threads))
    exp = Experiment.model_validate(args.experiment)
    arrays: Arrays = ray.get(args.data[0])  # zero-copy view of the node's object store
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
    live = LiveProgress(args.live_file if rank == 0 else None, exp.train.epochs, world)
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
        report = EpochReport(epoch=epoch, train_loss=tr[0] / tr[2], train_acc=tr[1] / tr[2],
                             val_loss=va[0] / max(va[2], 1), val_acc=va[1] / max(va[2], 1),
                             seconds=time.perf_counter() - t0, images_per_s=tr[2] / train_s,
                             lr=opt.param_groups[0]["lr"])
        if report.val_acc > state["best_val_acc"] or state["best_epoch"] == 0:
            state.update(best_val_acc=report.val_acc, best_epoch=epoch,
                         best_model={k: v.detach().cpu().clone() for k, v in scored.state_dict().items()})
        state["epoch"] = epoch
        state["history"] = state["history"] + [report.to_metrics()]  # in the checkpoint: each epoch exactly once
        _report(report.to_metrics(), state, model, opt, rank, ema=ema)
    where = _rank_nodes(world)
    if args.test:
        _final_test(model, opt, arrays, state, device, rank, world, precision, where, exp.train.test_time_flip)
    else:  # a search trial: the test split stays untouched until the search has picked its best
        final = FinalReport(epoch=state["epoch"], best_epoch=state["best_epoch"], best_val_acc=state["best_val_acc"],
                            precision=precision, **where)
        _report(final.to_metrics(), state, model, opt, rank)


def _rank_nodes(world: int) -> dict[str, list[str]]:
    """The host name and Ray node id of every rank, in rank order (a trial may span nodes)."""
    mine = (socket.gethostname(), node_id())
    parts = [mine] * world
    if world > 1:
        torch.distributed.all_gather_object(parts, mine)
    return {"rank_nodes": [p[0] for p in parts], "rank_node_ids": [p[1] for p in parts]}


def _record_placement_group(path: Path) -> None:
    """Where the sweep can find this run's placement group, should the trial driver die (sweep/trial.py)."""
    import ray.util

    pg = ray.util.get_current_placement_group()
    if pg is None:
        return
    write_text(path, pg.id.hex())


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
    final = FinalReport(epoch=state["epoch"], best_epoch=state["best_epoch"], best_val_acc=state["best_val_acc"],
                        test_acc=correct / max(len(idx), 1), test_images=len(idx), precision=precision, **where)
    _report(final.to_metrics(), state, model, opt, rank, extra=dict(zip(TEST_FILES, (idx, allp.astype(np.float32)))))
