"""Every path inside a run folder: nothing else builds one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import CnncError


@dataclass(frozen=True)
class RunDir:
    """Paths inside one run folder."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def state(self) -> Path:
        return self.root / "run.json"

    @property
    def trials(self) -> Path:
        return self.root / "trials.parquet"

    @property
    def epochs(self) -> Path:
        return self.root / "epochs.parquet"

    @property
    def predictions(self) -> Path:
        return self.root / "predictions.parquet"

    @property
    def occlusion(self) -> Path:
        return self.root / "occlusion.parquet"

    @property
    def report(self) -> Path:
        return self.root / "report"

    @property
    def tune(self) -> Path:
        return self.root / "tune"

    @property
    def train_storage(self) -> Path:
        return self.root / "train"

    @property
    def scheduler_state(self) -> Path:
        """A search's ASHA rungs (sweep.search.GroupedASHA): Tune does not save its scheduler."""
        return self.root / "tune-scheduler"

    def asha_state(self, experiment: str) -> Path:
        return self.scheduler_state / f"{experiment}.pkl"

    @property
    def occlusion_parts(self) -> Path:
        """Finished occlusion maps, one file each, kept until occlusion.parquet is written."""
        return self.root / "occlusion.parts"

    def occlusion_part(self, trial: str, index: int, target: int, settings: str) -> Path:
        """One image's finished maps: the same only for the same trial, image, target class and
        settings (``settings``: a digest of the ones that change a map)."""
        return self.occlusion_parts / f"{trial}-{index}-{target}-{settings}.parquet"

    @property
    def latest(self) -> Path:
        """``<output root>/latest``: a link to the newest run beside this one."""
        return self.root.parent / "latest"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    def train_run(self, trial_id: str) -> Path:
        """Ray Train's storage of one trial's run (its latest checkpoint), named after the Tune trial id."""
        return self.train_storage / f"train-{trial_id}"

    @property
    def live_dir(self) -> Path:
        return self.root / "live"

    def live(self, trial: str) -> Path:
        """A running trial's place inside its epoch (written by its rank 0, read by the progress lines)."""
        return self.live_dir / f"{trial}.json"

    def placement_group(self, trial: str) -> Path:
        """The id of the placement group a trial's workers run in (written by its rank 0)."""
        return self.checkpoints / f"{trial}.placement_group"

    def checkpoint(self, trial: str) -> Path:
        """A finished trial's best-validation weights and its recipe."""
        return self.checkpoints / f"{trial}.pt"

    def test_arrays(self, trial: str) -> tuple[Path, Path]:
        """A tested trial's test-split rows and softmax probabilities (.npy), as its workers gathered them."""
        return self.checkpoints / f"{trial}.test_index.npy", self.checkpoints / f"{trial}.test_probs.npy"

    def final(self, trial: str) -> Path:
        """A finished trial's last metrics (test accuracy): their presence marks it finished."""
        return self.checkpoints / f"{trial}.final.json"

    def history(self, trial: str) -> Path:
        """A finished trial's epochs, from its final checkpoint (each epoch once)."""
        return self.checkpoints / f"{trial}.epochs.json"


def open_run(path: Path | str) -> RunDir:
    """A run folder given by the user, checked to be one."""
    run = RunDir(Path(path))
    if not run.root.is_dir():
        raise CnncError(f"{run.root}: no such run folder")
    if not run.config.is_file():
        raise CnncError(f"{run.root}: not a cnnc run folder (no config.yaml)")
    return run
