"""The sweep: one Tune Tuner over every trial (a grid of experiments, or a search per experiment),
started afresh or restored.
"""

from __future__ import annotations

import os
import shutil
import time
from typing import Any, Sequence

from ray import tune

from ..config import SweepConfig
from ..data import PackedDataset
from ..models import shapes
from ..run.paths import RunDir
from ..training.ray_compat import stock_reason
from ..training.step import Arrays
from .plan import Plan, TrialResources
from .progress import Progress, TrialPlan, sweep_counts
from .trial import ReleaseLostPlacementGroups, run_trial

# A trial driver only waits on its trainer, so it takes no CPU (a full-CPU driver deadlocks a
# 2-CPU machine; a sliver of one, which its workers gave up, kept one rank off every node whose
# CPUs the workers fill: a 2-rank trial never fit two 1-CPU nodes). Tune refuses an empty
# resource request, so it asks for 1 MiB of Ray's "memory", which every node has.
DRIVER_RESOURCES = {"CPU": 0, "memory": 2**20}


def run_sweep(cfg: SweepConfig, p: Plan, data: PackedDataset, run: RunDir, resume: bool = False,
              callbacks: Sequence[Any] = ()) -> Any:
    """Run (or resume) every trial; returns Tune's ResultGrid. ``callbacks``: more Tune callbacks
    (a restored sweep brings back the ones it was started with)."""
    import ray

    ref = ray.put(Arrays.of(data))  # once per sweep; workers on a node share it zero-copy
    res = cfg.resources
    resources = TrialResources.of(res, p, lean=stock_reason() is None)
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, data=[ref], run=RunDir(run.root.resolve()), resources=resources),
        DRIVER_RESOURCES,
    )
    progress = Progress(_trial_plans(cfg, p, data), run, p.max_concurrent, len(data.indices("train")))
    callbacks = [progress, ReleaseLostPlacementGroups(run), *callbacks]
    if resume and tune.Tuner.can_restore(str(run.tune.resolve())):
        tuner = tune.Tuner.restore(str(run.tune.resolve()), trainable=trainable, resume_unfinished=True,
                                   resume_errored=True)
    else:
        # reuse_actors: a finished trial's driver process takes the next trial, so only the
        # first trials pay its start and imports (~9 s on 2 cores; Tune's default is not to reuse).
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(max_concurrent_trials=p.max_concurrent,
                                        reuse_actors=resources.lean or not _stops_early(cfg),
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

    # A trial whose workers failed reports that, without a val_acc; Tune's strict check would end
    # the whole search on that report (ASHA and the searchers skip results without the metric).
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
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
