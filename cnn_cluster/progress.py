"""Live sweep progress in plain lines (readable in a terminal and in a SLURM log).

A Tune callback in the driver process: it sees every trial start, every epoch
reported by rank 0, and every finish or failure, and prints one line for each
instead of Ray's own tables and log flood.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from ray.tune import Callback


class Progress(Callback):
    def __init__(self, names: list[str], epochs: dict[str, int], out: TextIO | None = None):
        self.names = names
        self.epochs = epochs
        self.state = {n: "pending" for n in names}
        self.out = out
        self.t0 = time.time()

    def setup(self, **info: Any) -> None:
        """Tune calls this as every fit() starts, also a restored one with this callback unpickled:
        the clock and the counts start afresh."""
        self.state = {n: "pending" for n in self.names}
        self.t0 = time.time()

    def __getstate__(self) -> dict:  # Tune pickles callbacks with its experiment state
        return {**self.__dict__, "out": None}

    def _name(self, trial: Any) -> str:
        return trial.config.get("experiment", {}).get("name", str(trial))

    def _counts(self) -> str:
        states = list(self.state.values())
        return " ".join(f"{s} {states.count(s)}" for s in ("pending", "running", "finished", "failed"))

    def _print(self, text: str) -> None:
        out = self.out or sys.stdout
        print(f"[{time.time() - self.t0:6.0f}s] {text}", file=out, flush=True)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.state[self._name(trial)] = "running"
        self._print(f"{self._name(trial)}: started  | {self._counts()}")

    def on_trial_restore(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._print(f"{self._name(trial)}: restarting from its last checkpoint")

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.state[self._name(trial)] = "pending"
        self._print(f"{self._name(trial)}: its driver process was lost; starting it again from its last checkpoint")

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        name = self._name(trial)
        if result.get("restored"):
            self._print(f"{name}: finished before the interruption; not run again")
            return
        if result.get("train_failed"):
            self.state[name] = "failed"
            self._print(f"{name}: FAILED: {result.get('error')}")
            return
        if result.get("final"):
            self._print(f"{name}: test accuracy {100 * result['test_acc']:.1f}% "
                        f"(best epoch {result['best_epoch']}, val {100 * result['best_val_acc']:.1f}%)")
            return
        self._print(f"{name}: epoch {result['epoch']}/{self.epochs.get(name, '?')}  "
                    f"loss {result['train_loss']:.3f}  train {100 * result['train_acc']:.1f}%  "
                    f"val {100 * result['val_acc']:.1f}%  {result['images_per_s']:.0f} img/s")

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if (trial.last_result or {}).get("train_failed"):
            self._print(f"{self._name(trial)}: done, failed (see trials.parquet) | {self._counts()}")
            return
        self.state[self._name(trial)] = "finished"
        self._print(f"{self._name(trial)}: finished | {self._counts()}")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.state[self._name(trial)] = "failed"
        self._print(f"{self._name(trial)}: FAILED (see trials.parquet) | {self._counts()}")

    def close(self, seconds: float, counts: dict[str, int]) -> None:
        text = " ".join(f"{k} {v}" for k, v in counts.items())
        self._print(f"sweep done in {seconds:.0f}s | {text}")


def sweep_counts(grid: Any) -> dict[str, int]:
    """Finished and failed trials of a ResultGrid (a restored sweep's callback saw only part of it)."""
    ok = sum(1 for r in grid if r.error is None and (r.metrics or {}).get("final") == 1)
    return {"finished": ok, "failed": len(grid) - ok}
