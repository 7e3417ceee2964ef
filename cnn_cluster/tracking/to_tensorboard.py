"""TensorBoard event files under ``RUN/tensorboard/<trial>``: the epochs as scalars, the final
numbers, and an HParams summary per trial so TensorBoard's HParams view compares the experiments.

tensorboardX writes them (it comes with Ray Tune: nothing to install); a full send rewrites a
trial's folder, since event files cannot say what they already hold."""

from __future__ import annotations

import shutil
from pathlib import Path

from .base import Tracker
from .fields import epoch_metrics, final_metrics

HPARAMS = "hparams"  # the subfolder of a trial's HParams session


class TensorBoardTracker(Tracker):
    name = "tensorboard"

    def __init__(self, logdir: Path):
        self.logdir = Path(logdir)
        self.writers: dict = {}
        self.params: dict[str, dict[str, str]] = {}

    def open(self, run_root: Path, sweep: str) -> None:
        self.logdir.mkdir(parents=True, exist_ok=True)

    def _writer(self, trial: str):
        from tensorboardX import SummaryWriter

        if trial not in self.writers:
            self.writers[trial] = SummaryWriter(logdir=str(self.logdir / trial), flush_secs=5)
        return self.writers[trial]

    def rebuild(self, trial: str) -> None:
        w = self.writers.pop(trial, None)
        if w is not None:
            w.close()
        shutil.rmtree(self.logdir / trial, ignore_errors=True)

    def trial(self, trial: str, params: dict[str, str], tags: dict[str, str]) -> None:
        self.params[trial] = {**self.params.get(trial, {}), **params}
        self._writer(trial)

    def epochs(self, trial: str, rows: list[dict]) -> None:
        w = self._writer(trial)
        for row in rows:
            for key, value in epoch_metrics(row).items():
                w.add_scalar(key, value, int(row["epoch"]))
        w.flush()

    def finish_trial(self, trial: str, row: dict) -> None:
        w = self._writer(trial)
        final = final_metrics(row)
        # HParams: the params against the final numbers, one session per trial; status as a param
        # so the view can filter out what ASHA stopped
        w.add_hparams({**self.params.get(trial, {}), "status": row["status"]}, final, name=HPARAMS)
        w.close()
        self.writers.pop(trial, None)

    def close(self, artifacts: list[Path], status: str) -> None:
        for w in self.writers.values():
            w.close()
        self.writers.clear()

    def where(self) -> str:
        return f"tensorboard --logdir {self.logdir}"
