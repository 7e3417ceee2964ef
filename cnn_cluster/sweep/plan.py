"""What a sweep will run, checked before Ray starts: every experiment against the data, and how
many trials the cluster runs at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..cluster import ClusterInfo
from ..config import Experiment, ResourcesConfig, SweepConfig
from ..data import PackedDataset
from ..errors import CnncError
from ..models import experiment_shapes


@dataclass(frozen=True)
class Plan:
    experiments: list[Experiment]
    max_concurrent: int
    cpus_per_trial: float
    gpus_per_trial: float
    workers: int
    dashboard: bool  # the cluster runs one: Ray Train's placement-group cleaner can work


@dataclass(frozen=True)
class TrialResources:
    """What each trial's driver is told of the sweep's resources (Tune hands it over, pickled)."""

    workers: int  # Ray Train workers (data-parallel ranks) of the trial
    cpus: float  # per worker
    gpus: float  # per worker
    threads: int  # torch threads per worker: its whole CPUs
    max_failures: int  # worker-group restarts before the trial fails
    dashboard: bool  # the cluster runs one: Ray Train's placement-group cleaner can work
    lean: bool  # Ray's internals are as cnnc expects: the lean trainer, else Ray's stock one

    @classmethod
    def of(cls, res: ResourcesConfig, p: "Plan", lean: bool) -> "TrialResources":
        return cls(res.workers_per_trial, res.cpus_per_worker, res.gpus_per_worker, max(1, int(res.cpus_per_worker)),
                   res.max_failures, p.dashboard, lean)


def check_experiments(cfg: SweepConfig, data: PackedDataset) -> list[Experiment]:
    """Every experiment against the data, before Ray starts: shapes and batch size."""
    exps = cfg.resolved_experiments()
    train_n = len(data.indices("train"))
    experiment_shapes(exps, data.image_size, data.num_classes)
    for i, exp in enumerate(exps):
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
