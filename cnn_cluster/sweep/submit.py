"""The whole job behind ``cnnc submit``: check, start Ray, sweep, write tables, occlusion.

Everything that can be checked without Ray (config, data, architectures) is
checked first; the run folder is created only once the cluster has shown it
can host the sweep, so a refused submission writes nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional

from .. import logs
from ..attribution.stage import occlude
from ..cluster import check_local_gpus, ensure_ray, ray_is_running
from ..config import SweepConfig, dump_config
from ..data import load_dataset
from ..errors import CnncError
from ..run import provenance
from ..run.folder import ensure_not_a_run, link_latest, new_run_dir
from ..run.io import drop_weights, trial_predictions, write_table, write_text
from ..run.paths import RunDir
from ..run.schemas import EPOCHS_SCHEMA, PREDICTIONS_SCHEMA, TRIALS_SCHEMA
from ..run.slurm_job import record_run, this_start
from ..run.state import get_state, set_state
from ..run.trials import count_statuses, counts_text
from ..tracking.check import check_tracking
from ..tracking.send import announce
from ..training.ray_compat import stock_reason

log = logs.get("sweep")


@dataclass(frozen=True)
class Outcome:
    run: RunDir
    best: Optional[str]
    statuses: tuple[str, ...]  # every trial's, in trials.parquet's order

    @property
    def finished(self) -> int:
        return self.statuses.count("finished")

    @property
    def failed(self) -> int:
        return self.statuses.count("failed")

    @property
    def stopped(self) -> int:  # stopped early by ASHA in a search: neither finished nor failed
        return self.statuses.count("stopped")

    def counts(self) -> str:
        """``4 finished, 8 stopped by ASHA, 0 failed``; stopped only where ASHA stopped some."""
        return counts_text(count_statuses(self.statuses))


def _slurm_starts(before: dict) -> dict:
    """run.json's ``slurm_starts`` with this start added: which start of which job drove the run."""
    start = this_start()
    if start is None:
        return {}
    starts = before.get("slurm_starts", [])
    log.info(f"SLURM job {start['job']}, start {start['start']}" + (f": resuming after {len(starts)} earlier "
             "start(s)" if starts else ""))
    return {"slurm_starts": [*starts, start]}


def submit(cfg: SweepConfig, run: Optional[RunDir] = None, resume: bool = False, num_cpus: Optional[int] = None,
           dashboard: bool = False, address: Optional[str] = None,
           dashboard_host: str = "127.0.0.1") -> Outcome:
    """Run a sweep (or resume one) and write its tables; returns where they are."""
    from ..tracking.live import LiveTracking  # Ray, imported once the CLI has set the token up
    from .collect import collect
    from .plan import check_experiments, plan_concurrency
    from .tuner import run_sweep

    data = load_dataset(cfg.data)
    log.debug(f"dataset {data.root}: {data.num_classes} classes, "
              + ", ".join(f"{s} {len(data.indices(s))}" for s in ("train", "val", "test")) + " images")
    exps = check_experiments(cfg, data)
    if cfg.occlusion:
        from ..attribution.check import check_occlusion

        check_occlusion(cfg.occlusion, exps, data.image_size, data.num_classes)
    check_tracking(cfg.tracking)
    if address is None and not ray_is_running():
        check_local_gpus(cfg.resources)
    stock = stock_reason()  # Ray's private names, checked before Ray starts
    cluster = ensure_ray(num_cpus=num_cpus, dashboard=dashboard, address=address, dashboard_host=dashboard_host)
    p = plan_concurrency(cfg, exps, cluster)
    log.debug(f"Ray: {'attached to ' + address if address else 'this process'}, {cluster.cpus:g} CPUs; per trial "
              f"{p.cpus_per_trial:g} CPUs, {p.gpus_per_trial:g} GPUs; at most {p.max_concurrent} at a time")
    if run is None:
        run = new_run_dir(cfg)
    if not resume:
        ensure_not_a_run(run.root)
    record_run(run)  # a SLURM job's later starts resume this folder
    run.root.mkdir(parents=True, exist_ok=True)
    link_latest(run)
    write_text(run.config, dump_config(cfg))
    before = get_state(run)
    set_state(run, "running", started=before.get("started", time.time()), versions=provenance.versions(),
              hardware=provenance.hardware(cluster), dataset=provenance.dataset(data), **_slurm_starts(before))
    log.info(f"run folder: {run.root}")
    if cfg.search:
        log.info(f"recipe search: {cfg.search.num_samples} {cfg.search.algorithm} recipes per experiment, scheduler "
            f"{cfg.search.scheduler}; only each experiment's best trial meets the test split")
    log.info(f"{len(exps)} experiments on {cluster.nodes} node(s), {cluster.cpus:g} CPUs, {cluster.gpus:g} GPUs; "
        f"{p.max_concurrent} trial(s) at a time, {cfg.resources.workers_per_trial} worker(s) each")
    if cluster.dashboard_url:
        log.info(f"Ray dashboard: {cluster.dashboard_url}")
    if stock:
        log.info(f"trials run on Ray's stock TorchTrainer ({stock}): same results, a slower start")
    announce(run, cfg.tracking)
    live = LiveTracking(cfg.tracking, run)
    t0 = time.time()
    try:
        grid = run_sweep(cfg, p, data, run, resume=resume, callbacks=[live])
    except KeyboardInterrupt:
        set_state(run, "interrupted")
        live.close(timeout=5)
        raise
    live.close()
    trials, epochs, best = collect(grid, p, data, run, search=cfg.search is not None)
    write_table(run.trials, trials, TRIALS_SCHEMA)
    write_table(run.epochs, epochs, EPOCHS_SCHEMA)
    preds = trial_predictions(run, best, data.labels) if best else []
    if best:
        write_table(run.predictions, preds, PREDICTIONS_SCHEMA)
    status = [t["status"] for t in trials]
    prior = get_state(run).get("sweep_seconds", 0.0) if resume else 0.0
    set_state(run, "occlusion" if best and cfg.occlusion else "finished" if best else "failed", best=best,
              precision={t["trial"]: t["precision"] for t in trials},
              sweep_seconds=prior + time.time() - t0, data_root=str(data.root))
    if best and cfg.occlusion:
        try:
            occlude(run, cfg.occlusion, data=data, predictions=preds)
        except CnncError as exc:  # the sweep's results stand; say why there are no maps
            log.warning(f"occlusion skipped: {exc}")
            set_state(run, "finished", occlusion_skipped=str(exc))
        set_state(run, "finished")
    if not cfg.output.keep_checkpoints:  # after the occlusion stage, the last reader of the weights
        drop_weights(run)
    return Outcome(run, best, tuple(status))
