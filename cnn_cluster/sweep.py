"""Tune trials that launch Ray Train runs: one trial per experiment.

The Ray 2.60 pattern: a Tune *function* trainable is each trial's driver; it
builds and fits a ``TorchTrainer`` whose run is named after the trial id, so a
restarted trial resumes from its own checkpoints. Drivers take almost no CPU,
so on a 2-CPU machine the workers of the running trials always fit.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from ray import tune

from .cluster import ClusterInfo
from .config import Experiment, ResourcesConfig, SweepConfig
from .data import PackedDataset
from .errors import CnncError
from .models import shapes
from .progress import Progress, TrialPlan, sweep_counts
from .ray_compat import stock_reason
from .results import EPOCH_COLUMNS, RunDir, atomic_path, read_history, trial_status, write_json, write_test_arrays
from .search_report import by_experiment
from .train import CHECKPOINT_FILE, TEST_FILES, Arrays, train_loop

# A trial driver only waits on its trainer, so it takes no CPU (a full-CPU driver deadlocks a
# 2-CPU machine; a sliver of one, which its workers gave up, kept one rank off every node whose
# CPUs the workers fill: a 2-rank trial never fit two 1-CPU nodes). Tune refuses an empty
# resource request, so it asks for 1 MiB of Ray's "memory", which every node has.
DRIVER_RESOURCES = {"CPU": 0, "memory": 2**20}


@dataclass(frozen=True)
class Plan:
    experiments: list[Experiment]
    max_concurrent: int
    cpus_per_trial: float
    gpus_per_trial: float
    workers: int
    dashboard: bool  # the cluster runs one: Ray Train's placement-group cleaner can work


def check_experiments(cfg: SweepConfig, data: PackedDataset) -> list[Experiment]:
    """Every experiment against the data, before Ray starts: shapes and batch size."""
    exps = cfg.resolved_experiments()
    train_n = len(data.indices("train"))
    for i, exp in enumerate(exps):
        try:
            shapes(exp.model, data.image_size, data.num_classes)
        except CnncError as exc:
            raise CnncError(f"experiments.{i} ({exp.name}): {exc}") from None
        if exp.train.batch_size > train_n:
            raise CnncError(f"experiments.{i} ({exp.name}): train.batch_size {exp.train.batch_size} is larger than "
                            f"the training split ({train_n} images)")
    return exps


def plan_concurrency(cfg: SweepConfig, exps: list[Experiment], cluster: ClusterInfo) -> Plan:
    """How many trials run at once; refuses a trial the cluster could never place."""
    n = len(exps) * (cfg.search.num_samples if cfg.search else 1)
    return Plan(exps, *_concurrency(cfg.resources, cluster, n), cfg.resources.workers_per_trial,
                dashboard=bool(cluster.dashboard_url))


def _concurrency(res: ResourcesConfig, cluster: ClusterInfo, n: int) -> tuple[int, float, float]:
    cpus = res.workers_per_trial * res.cpus_per_worker
    gpus = res.workers_per_trial * res.gpus_per_worker
    need = f"{res.workers_per_trial} workers x {res.cpus_per_worker:g} CPUs"
    if res.gpus_per_worker > 0 and cluster.max_node_gpus < res.gpus_per_worker:
        raise CnncError(f"resources.gpus_per_worker: {res.gpus_per_worker:g} GPUs per worker requested, but no node "
                        f"of the cluster has that many (largest: {cluster.max_node_gpus:g})")
    if res.cpus_per_worker > cluster.max_node_cpus:
        raise CnncError(f"resources.cpus_per_worker: {res.cpus_per_worker:g} CPUs per worker requested, but the "
                        f"largest node has {cluster.max_node_cpus:g}")
    if cpus > cluster.cpus + 1e-9:
        raise CnncError(f"resources: one trial needs {cpus:g} CPUs ({need}) but the cluster has "
                        f"{cluster.cpus:g}; lower resources.workers_per_trial or resources.cpus_per_worker")
    fit = math.floor((cluster.cpus + 1e-9) / cpus)
    if gpus > 0:
        fit = min(fit, math.floor(cluster.gpus / gpus + 1e-9))
    limit = res.max_concurrent_trials or fit
    return max(1, min(limit, fit, n)), cpus, gpus


# --------------------------------------------------------------------------- the trial


def _trial(config: dict, data: list, run: RunDir, resources: dict) -> None:
    """One Tune trial: fit a TorchTrainer for one experiment, keep its best weights.

    Tune starts it again where its driver process died (``max_failures``); the TorchTrainer's run,
    named after the trial id, then resumes from its last checkpoint.
    """
    from ray import tune
    from ray.train import CheckpointConfig, FailureConfig, ScalingConfig, TrainingFailedError
    from ray.train.torch import TorchConfig

    from .trainer import make_trainer

    exp = config["experiment"]
    done = run.final(exp["name"])
    if done.is_file():  # finished before the driver was killed: report it, train nothing
        tune.report({**json.loads(done.read_text()), "restored": 1})
        return
    trial_id = tune.get_context().get_trial_id()
    trainer = make_trainer(
        train_loop,
        train_loop_config={"experiment": exp, "data": data, "threads": resources["threads"],
                           "test": config.get("test", True),
                           "placement_group_file": str(run.placement_group(exp["name"])),
                           "live_file": str(run.live(exp["name"]))},
        torch_config=TorchConfig(backend="nccl" if resources["gpus"] > 0 else "gloo"),
        scaling_config=ScalingConfig(
            num_workers=resources["workers"], use_gpu=resources["gpus"] > 0,
            resources_per_worker={"CPU": resources["cpus"], **({"GPU": resources["gpus"]} if resources["gpus"] else {})},
        ),
        run=dict(
            name=run.train_run(trial_id).name,
            storage_path=str(run.train_storage),
            failure_config=FailureConfig(max_failures=resources["max_failures"]),
            checkpoint_config=CheckpointConfig(num_to_keep=1),  # the latest holds the best weights too
        ),
        lean=resources["lean"], pg_cleaner=resources["dashboard"],
    )
    try:
        result = trainer.fit()
    except TrainingFailedError as exc:  # workers failed too often: a failed trial, not a lost driver
        tune.report({"final": 0, "train_failed": 1, "error": _one_line(exc)})
        return
    _keep_best(result.checkpoint.path, run, exp, result.metrics)
    # Its outputs are in checkpoints/ now: Train's storage (model, optimizer, best weights) goes.
    shutil.rmtree(run.train_run(trial_id), ignore_errors=True)


def _keep_best(ckpt_dir: str, run: RunDir, exp: dict, final: dict) -> None:
    """Copy the best-validation weights, the recipe, test predictions and epochs into checkpoints/.

    The final metrics go last: their file marks the trial finished for a resumed sweep.
    """
    name = exp["name"]
    state = torch.load(Path(ckpt_dir) / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
    with atomic_path(run.checkpoint(name)) as tmp:
        torch.save({"model": state["best_model"], "experiment": exp, "best_epoch": state["best_epoch"]}, tmp)
    tested = [Path(ckpt_dir) / f for f in TEST_FILES]
    if all(f.is_file() for f in tested):  # a search trial has none
        write_test_arrays(run, name, *(np.load(f) for f in tested))
    write_json(run.history(name), state["history"])
    write_json(run.final(name), final)


# --------------------------------------------------------------------------- the sweep


def run_sweep(cfg: SweepConfig, p: Plan, data: PackedDataset, run: RunDir, resume: bool = False) -> Any:
    """Run (or resume) every trial; returns Tune's ResultGrid."""
    import ray

    ref = ray.put(Arrays.of(data))  # once per sweep; workers on a node share it zero-copy
    res = cfg.resources
    resources = {"workers": res.workers_per_trial, "gpus": res.gpus_per_worker,
                 "cpus": res.cpus_per_worker,
                 "threads": max(1, int(res.cpus_per_worker)), "max_failures": res.max_failures,
                 "dashboard": p.dashboard, "lean": stock_reason() is None}
    trainable = tune.with_resources(
        tune.with_parameters(_trial, data=[ref], run=RunDir(run.root.resolve()), resources=resources),
        DRIVER_RESOURCES,
    )
    progress = Progress(_trial_plans(cfg, p, data), run, p.max_concurrent, len(data.indices("train")))
    callbacks = [progress, ReleaseLostPlacementGroups(run)]
    if resume and tune.Tuner.can_restore(str(run.tune.resolve())):
        tuner = tune.Tuner.restore(str(run.tune.resolve()), trainable=trainable, resume_unfinished=True,
                                   resume_errored=True)
    else:
        # reuse_actors: a finished trial's driver process takes the next trial, so only the
        # first trials pay its start and imports (~9 s on 2 cores; Tune's default is not to reuse).
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(max_concurrent_trials=p.max_concurrent,
                                        reuse_actors=resources["lean"] or not _stops_early(cfg),
                                        trial_dirname_creator=lambda t: t.config["experiment"]["name"],
                                        trial_name_creator=lambda t: t.config["experiment"]["name"],
                                        **_search_args(cfg, p, run)),
            # A trial whose driver process died (killed, its node lost) starts again: its Train run resumes.
            run_config=tune.RunConfig(name=run.tune.name, storage_path=str(run.root.resolve()), verbose=0,
                                      callbacks=callbacks,
                                      failure_config=tune.FailureConfig(max_failures=res.max_failures)),
            **({} if cfg.search else {"param_space": {"experiment": tune.grid_search(
                [e.model_dump(mode="json") for e in p.experiments])}}),
        )
    # A restored Tuner brings back its pickled callbacks; Progress.setup restarts their clock and counts.
    t0 = time.time()
    grid = tuner.fit()
    progress.close(time.time() - t0, sweep_counts(grid))
    shutil.rmtree(run.live_dir, ignore_errors=True)  # only running trials have a place inside an epoch
    return grid


def _search_args(cfg: SweepConfig, p: Plan, run: RunDir) -> dict:
    """A search: per-experiment searchers and ASHAs (search.py) make the trials; else the grid does."""
    if cfg.search is None:
        return {}
    from .search import GroupedASHA, GroupedSearcher

    args: dict[str, Any] = {"search_alg": GroupedSearcher(cfg.search, p.experiments),
                            "num_samples": cfg.search.num_samples * len(p.experiments)}
    if cfg.search.scheduler == "asha":
        args["scheduler"] = GroupedASHA(cfg.search, p.experiments, run.asha_state)
    return args


def _stops_early(cfg: SweepConfig) -> bool:
    """ASHA stops trials: on Ray's stock trainer only ending the trial's process ends its workers."""
    return cfg.search is not None and cfg.search.scheduler == "asha"


def _trial_plans(cfg: SweepConfig, p: Plan, data: PackedDataset) -> dict[str, TrialPlan]:
    """Every trial's epochs and FLOPs, for the progress lines (a search's from its experiments')."""
    from .search import trial_name

    plans = {}
    for e in p.experiments:
        plan = TrialPlan(e.train.epochs, shapes(e.model, data.image_size, data.num_classes).flops)
        names = [trial_name(e.name, k) for k in range(cfg.search.num_samples)] if cfg.search else [e.name]
        plans.update({n: plan for n in names})
    return plans


class ReleaseLostPlacementGroups(tune.Callback):
    """A trial driver killed outright (SIGKILL, its node lost) takes its workers with it, but the
    placement group it reserved for them is scoped to the sweep's job and stays: later trials would
    wait for its CPUs in 60 s start-up timeouts. Ray Train's cleaner needs a dashboard; this does
    not. Tune calls it before it starts the trial again (or gives up on it)."""

    def __init__(self, run: RunDir):
        self.run = run

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        release_placement_group(self.run.placement_group(trial.config["experiment"]["name"]))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        release_placement_group(self.run.placement_group(trial.config["experiment"]["name"]))


def release_placement_group(path: Path) -> bool:
    """Remove the placement group whose id a trial's rank 0 wrote to ``path``, if it still exists."""
    import ray
    from ray.util.placement_group import PlacementGroup, placement_group_table, remove_placement_group

    try:
        pg = PlacementGroup(ray.PlacementGroupID(bytes.fromhex(path.read_text().strip())))
    except (OSError, ValueError):
        return False
    if placement_group_table(pg).get("state", "REMOVED") == "REMOVED":
        return False
    remove_placement_group(pg)
    return True


# --------------------------------------------------------------------------- outputs


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
    done = [t for t in trials if t["status"] == "finished" and t["test_acc"] is not None]
    best = max(done, key=lambda t: (t["val_acc"], t["test_acc"]))["trial"] if done else None
    return trials, epochs, best


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
        done = [t for t in rows if t["status"] == "finished" and t["val_acc"] is not None]
        best = max(done, key=lambda t: t["val_acc"], default=None)
        if best is not None:
            best["test_acc"] = evaluate_on_test(run, data, best["trial"])
        for t in rows:
            if t is not best:
                run.checkpoint(t["trial"]).unlink(missing_ok=True)  # weights no one will use


def evaluate_on_test(run: RunDir, data: PackedDataset, trial: str) -> float:
    """A finished trial's best weights on the test split, in this process; keeps its predictions
    beside its checkpoint (as a trial evaluated in its workers does) and returns the accuracy."""
    from .models import load_trained
    from .train import predict, resolve_precision

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
    if df is None or df.empty or any(c not in df for c in EPOCH_COLUMNS):
        return []
    df = df[df.get("final", 0).fillna(0) == 0].dropna(subset=["val_acc"])
    # A worker restarted from a checkpoint re-reports nothing it had reported,
    # but a resumed driver may replay history: keep the last row of each epoch.
    df = df.drop_duplicates(subset=["epoch"], keep="last").sort_values("epoch")
    return [{"trial": name, **{c: (int(r[c]) if c == "epoch" else float(r[c])) for c in EPOCH_COLUMNS}}
            for _, r in df.iterrows()]


def _trial_row(exp: Experiment, result: Any, epochs: list[dict], data: PackedDataset) -> dict:
    s = shapes(exp.model, data.image_size, data.num_classes, exp.train.batch_norm)
    final = (result.metrics or {}) if result is not None else {}
    error = None if result is None else result.error
    status = trial_status(error, final) if result is not None else "failed"
    ok = status == "finished"
    best = max(epochs, key=lambda e: e["val_acc"], default=None) if status == "stopped" else None
    return {
        "trial": exp.name,
        "trial_id": final.get("trial_id", ""),
        "status": status,
        "error": None if status != "failed" else _one_line(error) if error else final.get("error") or "did not finish",
        **exp.model.model_dump(),
        "conv_layers": exp.model.conv_layers,
        **exp.train.model_dump(),
        "precision": final.get("precision") or exp.train.precision,
        "params": s.params,
        "flops": s.flops,
        "best_epoch": final.get("best_epoch") if ok else best["epoch"] if best else None,
        "val_acc": final.get("best_val_acc") if ok else best["val_acc"] if best else None,
        "epochs_run": len(epochs),
        "test_acc": final.get("test_acc") if ok else None,
        "train_seconds": float(sum(e["seconds"] for e in epochs)),
        "images_per_s": float(np.mean([e["images_per_s"] for e in epochs])) if epochs else None,
        "node": final.get("node"),
        "rank_nodes": final.get("rank_nodes"),
        "rank_node_ids": final.get("rank_node_ids"),
        "node_id": final.get("node_id"),
    }


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    last = [line for line in text if line.strip()][-1] if text else repr(error)
    return f"{type(error).__name__}: {last}"[:500]
