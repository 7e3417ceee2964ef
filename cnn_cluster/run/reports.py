"""What a trial reports, typed: one epoch, its final numbers, or its failure.

The worker (``training/worker.py``) and the trial driver (``sweep/trial.py``) build these and send
``to_metrics()`` through Tune; progress lines, the scheduler's rows, a trial's status and the sweep's
tables read them back with :func:`parse`. The flat keys Tune carries are written and read here only,
so a renamed field fails here (and in ``tests/test_reports.py``), not silently in a reader.
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from typing import Any, Mapping, Optional, Union


@dataclass(frozen=True)
class EpochReport:
    """One finished epoch (rank 0's view after the ranks' sums): a row of epochs.parquet."""

    epoch: int
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    seconds: float  # the epoch's wall time, validation included
    images_per_s: float  # training images per second over all ranks
    lr: Optional[float] = None  # the learning rate of the epoch's last step (None: a run from before it was kept)

    def to_metrics(self) -> dict:
        return {**asdict(self), "final": 0}

    def row(self, trial: str) -> dict:
        return {"trial": trial, **asdict(self)}


@dataclass(frozen=True)
class FinalReport:
    """A trial's last word: its best epoch and, where it was tested, its test accuracy."""

    epoch: int  # epochs trained
    best_epoch: int
    best_val_acc: float
    precision: Optional[str] = None  # what training ran in (auto resolved)
    rank_nodes: list[str] = field(default_factory=list)  # host of each rank
    rank_node_ids: list[str] = field(default_factory=list)  # Ray node id of each rank
    test_acc: Optional[float] = None  # None: a search trial, validated only
    test_images: Optional[int] = None
    node: Optional[str] = None  # rank 0's host and Ray node (every report carries them)
    node_id: Optional[str] = None
    restored: bool = False  # read back from the run folder: finished before an interruption

    @property
    def tested(self) -> bool:
        return self.test_acc is not None

    def to_metrics(self) -> dict:
        m = {k: v for k, v in asdict(self).items() if v is not None}
        # val_acc: the metric ASHA and Tune track, so a final report ranks the trial like its epochs
        return {**m, "final": 1, "val_acc": self.best_val_acc, "restored": int(self.restored)}

    def as_restored(self) -> "FinalReport":
        return replace(self, restored=True)


@dataclass(frozen=True)
class FailedReport:
    """Training failed more often than ``max_failures`` allows (the driver itself is fine)."""

    error: str

    def to_metrics(self) -> dict:
        return {"final": 0, "train_failed": 1, "error": self.error}


Report = Union[EpochReport, FinalReport, FailedReport]
EPOCH_FIELDS = tuple(f.name for f in fields(EpochReport))
_EPOCH_REQUIRED = tuple(f.name for f in fields(EpochReport) if f.default is MISSING)


def parse(metrics: Optional[Mapping[str, Any]]) -> Optional[Report]:
    """The report behind Tune's flat result dict (or a row of its metrics table), None where it
    holds none of ours (nothing reported yet)."""
    m = {k: v for k, v in (metrics or {}).items() if v is not None and v == v}  # NaN: a table's gap
    if m.get("train_failed"):
        return FailedReport(str(m.get("error", "training failed")))
    if m.get("final") == 1:
        known = {f.name for f in fields(FinalReport)} - {"restored"}
        return FinalReport(**{k: m[k] for k in known if k in m}, restored=bool(m.get("restored")))
    if all(k in m for k in _EPOCH_REQUIRED):
        return EpochReport(**{k: int(m[k]) if k == "epoch" else float(m[k]) for k in EPOCH_FIELDS if k in m})
    return None
