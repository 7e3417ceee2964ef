"""A run folder read once, for the report, the page and the figures.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..config import SweepConfig, load_config
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
                   read_table(run.predictions), read_table(run.occlusion))
