"""Weights & Biases: one W&B run per trial, grouped by the sweep's run folder; offline by default.

A trial's W&B id is derived from the run folder and the trial, so a resumed sweep or a second send
continues the same run (online, W&B ignores steps it holds). Offline runs are files under
``RUN/wandb`` for ``wandb sync``; a full send replaces the trial's earlier offline files, which
cannot say what they hold."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any, Optional

from ..config import WandbConfig
from .base import Tracker
from .fields import epoch_metrics, final_metrics


class WandbTracker(Tracker):
    name = "wandb"

    def __init__(self, cfg: WandbConfig, run_root: Path):
        self.cfg = cfg
        self.dir = Path(run_root)  # W&B adds its own wandb/ below
        self.group = ""
        self.runs: dict[str, Any] = {}

    def open(self, run_root: Path, sweep: str) -> None:
        self.run_root = str(run_root)
        self.group = Path(run_root).name

    def run_id(self, trial: str) -> str:
        return hashlib.sha256(f"{self.run_root}\n{trial}".encode()).hexdigest()[:16]

    def rebuild(self, trial: str) -> None:
        self._end(trial, 0)
        if self.cfg.mode == "offline":
            for old in (self.dir / "wandb").glob(f"offline-run-*-{self.run_id(trial)}"):
                shutil.rmtree(old, ignore_errors=True)

    def trial(self, trial: str, params: dict[str, str], tags: dict[str, str]) -> None:
        import wandb

        if trial in self.runs:
            self.runs[trial].config.update(params, allow_val_change=True)
            return
        self.runs[trial] = wandb.init(
            project=self.cfg.project, entity=self.cfg.entity, mode=self.cfg.mode, dir=str(self.dir),
            id=self.run_id(trial), name=trial, group=self.group, job_type="trial", config=params,
            tags=[tags["cnnc.experiment"]], notes=tags["cnnc.run_folder"], resume="allow",
            reinit="create_new", settings=wandb.Settings(silent=True, console="off", x_disable_stats=True))

    def epochs(self, trial: str, rows: list[dict]) -> None:
        run = self.runs[trial]
        for r in rows:
            run.log(epoch_metrics(r), step=int(r["epoch"]))

    def finish_trial(self, trial: str, row: dict) -> None:
        run = self.runs[trial]
        run.summary.update({**final_metrics(row), "status": row["status"]})
        self._end(trial, 0 if row["status"] != "failed" else 1)

    def _end(self, trial: str, code: int) -> None:
        run = self.runs.pop(trial, None)
        if run is not None:
            run.finish(exit_code=code)

    def close(self, artifacts: list[Path], status: str) -> None:
        for trial in list(self.runs):
            self._end(trial, 0)

    def where(self) -> Optional[str]:
        if self.cfg.mode == "offline":
            return f"wandb sync {self.dir / 'wandb'}/offline-run-*"
        return f"https://wandb.ai/{self.cfg.entity or '<entity>'}/{self.cfg.project} (group {self.group})"
