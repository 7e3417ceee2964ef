"""A finished sweep's rows for the tables: one per trial, one per epoch, and the best trial; a
search's best trial per experiment meets the test split here.
"""

from __future__ import annotations

import json
import shutil
from typing import Any, Optional

import numpy as np
import torch

from ..config import Experiment
from ..data import PackedDataset
from ..models import shapes
from ..run.io import read_history, write_test_arrays
from ..run.paths import RunDir
from ..run.reports import EpochReport, FailedReport, FinalReport, parse
from ..run.trials import best_trial, by_experiment, trial_status
from ..training.step import Arrays
from .plan import Plan
from .trial import one_line


def collect(grid: Any, p: Plan, data: PackedDataset, run: RunDir,
            search: bool = False) -> tuple[list[dict], list[dict], Optional[str]]:
    """Trial rows (config order), epoch rows (each epoch once) and the best trial's name.

    A search's trials have validation numbers only; the best trial of each experiment is then
    evaluated on the test split here, once, and the other trials' checkpoints are dropped."""
    trials, epochs = [], []
    for exp, group, sample, values, result in _results(grid, p, search):
        rows = read_history(run, exp.name) or _epoch_rows(exp.name, result)
        epochs += rows
        trials.append({**_trial_row(exp, result, rows, data), "workers": p.workers, "experiment": group,
                       "sample": sample, "searched": json.dumps(values) if search else None})
    for t in trials:  # a stopped trial's Train storage (model and optimizer state) has no use left
        if t["status"] == "stopped" and t["trial_id"]:
            shutil.rmtree(run.train_run(t["trial_id"]), ignore_errors=True)
    if search:
        _test_group_bests(trials, data, run)
    best = best_trial(trials)
    return trials, epochs, best["trial"] if best else None


def _results(grid: Any, p: Plan, search: bool) -> list[tuple[Experiment, str, int, dict, Any]]:
    """(recipe, experiment, sample, searched values, result) per trial, in experiment then sample order."""
    if not search:
        by_name = {r.config["experiment"]["name"]: r for r in grid}
        return [(e, e.name, 0, {}, by_name.get(e.name)) for e in p.experiments]
    order = {e.name: i for i, e in enumerate(p.experiments)}
    out = [(Experiment.model_validate(r.config["experiment"]), r.config["group"], r.config["sample"],
            r.config["values"], r) for r in grid if "group" in (r.config or {})]
    return sorted(out, key=lambda t: (order.get(t[1], len(order)), t[2]))


def _test_group_bests(trials: list[dict], data: PackedDataset, run: RunDir) -> None:
    """Per experiment, its best finished trial by validation accuracy meets the test split."""
    for rows in by_experiment(trials).values():
        best = best_trial(rows, tested=False)  # the one trial of the experiment that meets the test split
        if best is not None:
            best["test_acc"] = evaluate_on_test(run, data, best["trial"])
        for t in rows:
            if t is not best:
                run.checkpoint(t["trial"]).unlink(missing_ok=True)  # weights no one will use


def evaluate_on_test(run: RunDir, data: PackedDataset, trial: str) -> float:
    """A finished trial's best weights on the test split, in this process; keeps its predictions
    beside its checkpoint (as a trial evaluated in its workers does) and returns the accuracy."""
    from ..models import load_trained
    from ..training.step import predict, resolve_precision

    model, exp = load_trained(run.checkpoint(trial), data.num_classes, data.image_size)
    idx = np.flatnonzero(data.split == 2)
    cpu = torch.device("cpu")
    probs = predict(model, Arrays.of(data), idx, cpu, precision=resolve_precision(exp.train.precision, cpu),
                    flip=exp.train.test_time_flip).numpy()
    write_test_arrays(run, trial, idx, probs)
    return float((probs.argmax(1) == data.labels[idx]).mean()) if len(idx) else 0.0


def _epoch_rows(name: str, result: Any) -> list[dict]:
    """A trial that did not finish: what Tune recorded of its epochs."""
    df = getattr(result, "metrics_dataframe", None) if result is not None else None
    if df is None or df.empty:
        return []
    # A worker restarted from a checkpoint re-reports nothing it had reported,
    # but a resumed driver may replay history: keep the last row of each epoch.
    reports = {r.epoch: r for r in map(parse, df.to_dict("records")) if isinstance(r, EpochReport)}
    return [reports[e].row(name) for e in sorted(reports)]


def _trial_row(exp: Experiment, result: Any, epochs: list[dict], data: PackedDataset) -> dict:
    s = shapes(exp.model, data.image_size, data.num_classes, exp.train.batch_norm)
    metrics = (result.metrics or {}) if result is not None else {}
    error = None if result is None else result.error
    status = trial_status(error, metrics) if result is not None else "failed"
    report = parse(metrics)
    final = report if status == "finished" and isinstance(report, FinalReport) else None
    best = max(epochs, key=lambda e: e["val_acc"], default=None) if status == "stopped" else None
    where = report if isinstance(report, FinalReport) else None
    return {
        "trial": exp.name,
        "trial_id": metrics.get("trial_id", ""),  # Tune's own key on every result
        "status": status,
        "error": None if status != "failed" else one_line(error) if error else
        report.error if isinstance(report, FailedReport) else "did not finish",
        **exp.model.model_dump(),
        "conv_layers": exp.model.conv_layers,
        **exp.train.model_dump(),
        "precision": where.precision if where and where.precision else exp.train.precision,
        "params": s.params,
        "flops": s.flops,
        "best_epoch": final.best_epoch if final else best["epoch"] if best else None,
        "val_acc": final.best_val_acc if final else best["val_acc"] if best else None,
        "epochs_run": len(epochs),
        "test_acc": final.test_acc if final else None,
        "train_seconds": float(sum(e["seconds"] for e in epochs)),
        "images_per_s": float(np.mean([e["images_per_s"] for e in epochs])) if epochs else None,
        "node": where.node if where else metrics.get("node"),
        "rank_nodes": where.rank_nodes if where and where.rank_nodes else None,
        "rank_node_ids": where.rank_node_ids if where and where.rank_node_ids else None,
        "node_id": where.node_id if where else metrics.get("node_id"),
    }
