"""What a tracked trial holds, as flat names and values, from the run's own rows.

Params are the trial's experiment fields under the names trials.parquet gives them (plus, in a
search, the drawn values as ``search.<field>``); metrics per epoch are epochs.parquet's columns with
the epoch as step; the final metrics and the status come from the trial's row. Live and after-the-fact
sending both build their payloads here, so the two cannot disagree.
"""

from __future__ import annotations

import json
import socket
from typing import Any, Optional

from ..config import Experiment, ModelConfig, TrainConfig
from ..run.reports import EPOCH_FIELDS

EPOCH_METRICS = tuple(f for f in EPOCH_FIELDS if f != "epoch")  # the step is the epoch
# at a trial's end; the best validation accuracy under its own name, so val_acc's history stays the epochs'
FINAL_METRICS = {"test_acc": "test_acc", "best_val_acc": "val_acc", "best_epoch": "best_epoch",
                 "epochs_run": "epochs_run", "train_seconds": "train_seconds"}  # metric -> trials.parquet column
EXPERIMENT_FIELDS = (*ModelConfig.model_fields, "conv_layers", *TrainConfig.model_fields)


def experiment_params(exp: Experiment, searched: Optional[dict] = None) -> dict[str, str]:
    """A trial's params as it starts: its experiment's fields under trials.parquet's names, and in a
    search the drawn values. ``precision`` waits for the end: the row holds what ``auto`` became."""
    fields = {**exp.model.model_dump(), "conv_layers": exp.model.conv_layers, **exp.train.model_dump()}
    fields.pop("precision")
    fields.update({f"search.{k}": v for k, v in (searched or {}).items()})
    return {k: param_text(v) for k, v in fields.items()}


def row_params(row: dict) -> dict[str, str]:
    """A trials.parquet row's params: the same names and text as :func:`experiment_params`, and the
    precision the trial ran in."""
    fields = {k: row[k] for k in EXPERIMENT_FIELDS if k in row}
    fields.update({f"search.{k}": v for k, v in json.loads(row.get("searched") or "{}").items()})
    return {k: param_text(v) for k, v in fields.items()}


def param_text(value: Any) -> str:
    """One param value as text: lists and tuples as JSON, None as 'None' (MLflow and TensorBoard
    keep strings; the same text on both)."""
    if isinstance(value, (list, tuple)):
        return json.dumps([param_value(v) for v in value])
    return str(param_value(value))


def param_value(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def epoch_metrics(row: dict) -> dict[str, float]:
    return {k: float(row[k]) for k in EPOCH_METRICS if row.get(k) is not None}


def final_metrics(row: dict) -> dict[str, float]:
    """A trial's end: test accuracy (where it was tested), best validation, its epochs and time."""
    return {k: float(row[c]) for k, c in FINAL_METRICS.items() if row.get(c) is not None}


def tags(run_root: str, trial: str, experiment: Optional[str], sample: Optional[int],
         host: Optional[str] = None) -> dict[str, str]:
    """What finds a tracked trial again (its run folder and name) and what it was: experiment,
    search sample, host."""
    return {"cnnc.run_folder": run_root, "cnnc.trial": trial, "cnnc.experiment": experiment or trial,
            "cnnc.sample": str(sample or 0), "cnnc.host": host or socket.gethostname()}
