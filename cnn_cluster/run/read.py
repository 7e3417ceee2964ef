"""A run folder read once, for the report, the page and the figures; the data it trained on."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..config import SweepConfig, load_config
from ..data import PackedDataset, open_packed
from ..errors import CnncError
from .io import read_table
from .paths import RunDir
from .state import get_state


@dataclass(frozen=True)
class RunData:
    """Everything a report shows, read once: the report, the page and the figures take this."""

    run: RunDir
    state: dict
    config: Optional[SweepConfig]  # None where config.yaml no longer validates
    trials: list[dict]
    epochs: list[dict]
    predictions: list[dict]
    occlusion: list[dict]

    @property
    def best(self) -> Optional[str]:
        return self.state.get("best")

    @property
    def name(self) -> str:
        return self.run.root.name


def read_run(run: RunDir) -> RunData:
    """Read a run folder's state, config and tables (missing tables read empty)."""
    try:
        config: Optional[SweepConfig] = load_config(run.config)
    except CnncError:
        config = None
    return RunData(run, get_state(run), config, read_table(run.trials), read_table(run.epochs),
                   read_table(run.predictions), _occlusion_rows(run))


def _occlusion_rows(run: RunDir) -> list[dict]:
    """occlusion.parquet's rows; a run from before attribution methods holds occlusion maps only."""
    return [dict(r, method=r.get("method") or "occlusion") for r in read_table(run.occlusion)]


def open_run_dataset(run: RunDir, state: dict, boxes: bool = True) -> PackedDataset:
    """The packed data a run trained on (``run.json`` records where), with its object boxes where
    its config names a box file and ``boxes``; raises CnncError where it is gone."""
    root = state.get("data_root") or (state.get("dataset") or {}).get("root")
    if not root:
        raise CnncError(f"{run.root}: run.json does not say where the run's data is")
    data = open_packed(Path(root))
    box_file = load_config(run.config).data.boxes if boxes else None
    if box_file is not None:
        from ..data.boxes import apply_boxes

        data = apply_boxes(data, box_file)
    return data
