"""Live sweep progress, readable in a terminal and in a SLURM log.

A Tune callback in the sweep's driver process: it sees every trial start, every epoch reported
by rank 0, and every finish or failure, and prints one line for each instead of Ray's own tables
and log flood. Inside an epoch it reads each running trial's live file (written by its rank 0 at
most once a second, ``training.worker.LiveProgress``) and shows where it is, with ETAs from measured
throughput: on a terminal one updating line per running trial, elsewhere (SLURM logs,
``cnnc logs``, a pipe) one line per running trial every ``CNNC_PROGRESS_S`` seconds (15). Lines go
to the ``cnnc.progress`` logger; the terminal's live block is the handler's (``logs``).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

from ray.tune import Callback

from .. import logs
from ..run.paths import RunDir
from ..run.reports import EpochReport, FailedReport, FinalReport, parse
from ..run.trials import count_statuses, trial_status

log = logs.get("progress")
INTERVAL_S = 15.0  # periodic lines: often enough to see a trial move, rare enough not to flood a log


@dataclass(frozen=True)
class TrialPlan:
    epochs: int
    flops: int  # forward FLOPs per image: scales measured throughput to the trials not started yet


class Progress(Callback):
    def __init__(self, trials: dict[str, TrialPlan], run: RunDir, concurrent: int, train_images: int):
        self.trials, self.run, self.concurrent, self.train_images = trials, run, concurrent, train_images
        self.setup()

    def setup(self, **info: Any) -> None:
        """Tune calls this as every fit() starts, also a restored one with this callback unpickled:
        the clock, the counts and the display start afresh."""
        self.state = {n: "pending" for n in self.trials}
        self.live: dict[str, dict] = {}
        self.t0 = time.time()
        self.last_read = self.last_line = time.time()
        self.interval = float(os.environ.get("CNNC_PROGRESS_S", INTERVAL_S))

    # ----------------------------------------------------------------------- events

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.state[self._name(trial)] = "running"
        self._say(f"{self._name(trial)}: started  | {self._counts()}")

    def on_trial_restore(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._say(f"{self._name(trial)}: restarting from its last checkpoint")

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.state[self._name(trial)] = "pending"
        self._say(f"{self._name(trial)}: its driver process was lost; starting it again from its last checkpoint")

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        name, report = self._name(trial), parse(result)
        if isinstance(report, FinalReport) and report.restored:
            self._say(f"{name}: finished before the interruption; not run again")
        elif isinstance(report, FailedReport):
            self.state[name] = "failed"
            self._say(f"{name}: FAILED: {report.error}", logging.WARNING)
        elif isinstance(report, FinalReport) and not report.tested:  # a search trial: validation only
            self._say(f"{name}: done, best val {100 * report.best_val_acc:.1f}% (epoch {report.best_epoch})")
        elif isinstance(report, FinalReport):
            self._say(f"{name}: test accuracy {100 * report.test_acc:.1f}% "
                      f"(best epoch {report.best_epoch}, val {100 * report.best_val_acc:.1f}%)")
        elif isinstance(report, EpochReport):
            self.live.pop(name, None)  # the epoch's end says more than its last batch
            self._say(f"{name}: epoch {report.epoch}/{self.trials[name].epochs}  "
                      f"loss {report.train_loss:.3f}  train {100 * report.train_acc:.1f}%  "
                      f"val {100 * report.val_acc:.1f}%  {report.images_per_s:.0f} img/s")

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        name = self._name(trial)
        self.live.pop(name, None)
        last = parse(trial.last_result)
        if isinstance(last, FailedReport):
            self._say(f"{name}: done, failed (see trials.parquet) | {self._counts()}", logging.WARNING)
            return
        self.state[name] = trial_status(None, trial.last_result)  # completed: Tune saw no error
        if self.state[name] == "stopped":
            self._say(f"{name}: stopped by ASHA after epoch {last.epoch} | {self._counts()}")
            return
        self._say(f"{name}: {self.state[name]} | {self._counts()}")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.state[self._name(trial)] = "failed"
        self.live.pop(self._name(trial), None)
        self._say(f"{self._name(trial)}: FAILED (see trials.parquet) | {self._counts()}", logging.WARNING)

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        """Between Tune's events (every ~0.1 s): the running trials' places inside their epochs."""
        now = time.time()
        if now - self.last_read < 0.5:
            return
        self.last_read = now
        self._read_live()
        lines = [self.live_line(n) for n in self.trials if n in self.live]
        block = logs.live_block()
        if block:
            block.show(lines)
        elif lines and now - self.last_line >= self.interval:
            for line in lines:
                self._say(line)

    def close(self, seconds: float, counts: dict[str, int]) -> None:
        text = " ".join(f"{k} {v}" for k, v in counts.items())
        self._say(f"sweep done in {seconds:.0f}s | {text}")
        block = logs.live_block()
        if block:
            block.show([])

    # ----------------------------------------------------------------------- live lines

    def _read_live(self) -> None:
        for name, state in self.state.items():
            if state != "running":
                continue
            try:
                live = json.loads(self.run.live(name).read_text())
            except (OSError, ValueError):
                continue
            if live.get("time", 0) >= self.t0 and live.get("epoch_seconds", 0) > 0:
                self.live[name] = live

    def live_line(self, name: str) -> str:
        live = self.live[name]
        return (f"{name}: epoch {live['epoch']}/{live['epochs']} batch {live['batch']}/{live['batches']}  "
                f"loss {live['loss']:.3f}  {live['images_per_s']:.0f} img/s  "
                f"ETA trial {_duration(self._trial_eta(name))}, sweep {_duration(self.sweep_eta())}")

    def _trial_eta(self, name: str) -> float:
        live = self.live[name]
        per_batch = live["epoch_seconds"] / max(live["batch"], 1)
        left = (live["epochs"] - live["epoch"]) * live["batches"] + live["batches"] - live["batch"]
        return left * per_batch

    def sweep_eta(self) -> float:
        """Running trials' ETAs, plus the pending ones at the measured seconds per image and FLOP,
        shared over the trials that run at once."""
        measured = [1.0 / (live["images_per_s"] * self.trials[n].flops) for n, live in self.live.items()
                    if live["images_per_s"] > 0]
        if not measured:
            return float("nan")
        per_flop_image = sum(measured) / len(measured)
        pending = sum(p.epochs * self.train_images * p.flops * per_flop_image
                      for n, p in self.trials.items() if self.state[n] == "pending")
        etas = [self._trial_eta(n) for n in self.live]
        shared = (sum(etas) + pending) / max(1, min(self.concurrent, len(self.live) + (pending > 0)))
        return max(max(etas, default=0.0), shared)  # never before the longest running trial ends

    # ----------------------------------------------------------------------- output

    def _name(self, trial: Any) -> str:
        return trial.config.get("experiment", {}).get("name", str(trial))

    def _counts(self) -> str:
        counts = count_statuses(self.state.values(), ("pending", "running", "finished", "stopped", "failed"))
        return " ".join(f"{s} {n}" for s, n in counts.items())

    def _say(self, text: str, level: int = logging.INFO) -> None:
        self.last_line = time.time()
        log.log(level, f"[{time.time() - self.t0:6.0f}s] {text}")


def _duration(seconds: float) -> str:
    if seconds != seconds:  # nan: nothing measured yet
        return "?"
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def sweep_counts(grid: Any) -> dict[str, int]:
    """Finished, ASHA-stopped and failed trials of a ResultGrid (a restored sweep's callback saw only
    part of it)."""
    return count_statuses(trial_status(r.error, r.metrics or {}) for r in grid)
