"""The one shape every tracker has: a parent per sweep, a child per trial, each found again if it
exists (so sending twice, or resuming, duplicates nothing)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Optional


class Tracker(ABC):
    name: str  # as the CLI flag and the config key say it: tensorboard, mlflow, wandb

    @abstractmethod
    def open(self, run_root: Path, sweep: str) -> None:
        """Find or start the sweep's parent run."""

    @abstractmethod
    def trial(self, trial: str, params: dict[str, str], tags: dict[str, str]) -> None:
        """Find or start the trial's run; add the params it lacks."""

    @abstractmethod
    def epochs(self, trial: str, rows: list[dict]) -> None:
        """Send the epochs (epochs.parquet rows) the trial's run does not hold yet."""

    @abstractmethod
    def finish_trial(self, trial: str, row: dict) -> None:
        """The trial's final metrics and status (its trials.parquet row); ends its run."""

    @abstractmethod
    def close(self, artifacts: list[Path], status: str) -> None:
        """Attach the run's files to the parent and end it (status: the run's, run.json's)."""

    def where(self) -> Optional[str]:
        """Where a person looks: a command or a URL."""
        return None

    def rebuild(self, trial: str) -> None:
        """Before a full send of ``trial`` from the tables: trackers that cannot tell what they hold
        (local event files) start its record afresh, so the send replaces it instead of adding."""


STATUS = {"finished": "FINISHED", "stopped": "KILLED", "failed": "FAILED"}  # trial status -> run state
