"""The whole job behind ``cnnc submit``: check, start Ray, sweep, write tables.

Everything that can be checked without Ray (config, data, architectures) is
checked first; the run folder is created only once the cluster has shown it
can host the sweep, so a refused submission writes nothing.
"""

from __future__ import annotations

import contextlib
import platform
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Optional, TextIO

from . import __version__
from .cluster import check_local_gpus, ensure_ray, ray_is_running
from .config import OcclusionConfig, SweepConfig, dump_config, load_config
from .data import PackedDataset, load_dataset, open_packed
from .errors import CnncError
from .ray_compat import stock_reason
from .results import (ACTIVE, EPOCHS_SCHEMA, OCCLUSION_SCHEMA, PREDICTIONS_SCHEMA, TRIALS_SCHEMA, RunDir, get_state,
                      read_table, set_state, trial_predictions, write_table, write_text)


@dataclass(frozen=True)
class Outcome:
    run: RunDir
    best: Optional[str]
    finished: int
    failed: int


@contextlib.contextmanager
def interruptible(run: RunDir):
    """SIGINT and SIGTERM (Ctrl-C, scancel, a SLURM time limit, ``cnnc stop``) interrupt the sweep.

    The state is recorded first: under scancel SLURM signals Ray's processes at the same time,
    and the orderly stop that follows can hang until this process is killed. SIGINT is taken
    even where a shell started us with it ignored (background jobs).
    """
    def interrupt(signum, frame) -> None:
        if get_state(run).get("state") in ACTIVE:
            set_state(run, "interrupted")
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def new_run_dir(cfg: SweepConfig) -> RunDir:
    root = Path(cfg.output.root).expanduser()
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path = root / f"{cfg.name}-{stamp}"
    n = 1
    while path.exists():
        n += 1
        path = root / f"{cfg.name}-{stamp}-{n}"
    return RunDir(path)


def submit(cfg: SweepConfig, run: Optional[RunDir] = None, resume: bool = False, num_cpus: Optional[int] = None,
           dashboard: bool = False, address: Optional[str] = None, out: TextIO | None = None,
           dashboard_host: str = "127.0.0.1") -> Outcome:
    """Run a sweep (or resume one) and write its tables; returns where they are."""
    from .sweep import check_experiments, collect, plan_concurrency, run_sweep

    say = _printer(out)
    data = load_dataset(cfg.data)
    exps = check_experiments(cfg, data)
    if cfg.occlusion:
        from .occlusion_jobs import check_window

        check_window(cfg.occlusion, data.image_size)
    if address is None and not ray_is_running():
        check_local_gpus(cfg.resources)
    stock = stock_reason()  # Ray's private names, checked before Ray starts
    cluster = ensure_ray(num_cpus=num_cpus, dashboard=dashboard, address=address, dashboard_host=dashboard_host)
    p = plan_concurrency(cfg, exps, cluster)
    if run is None:
        run = new_run_dir(cfg)
    if not resume:
        ensure_not_a_run(run.root)
    run.root.mkdir(parents=True, exist_ok=True)
    _link_latest(run)
    write_text(run.config, dump_config(cfg))
    set_state(run, "running", started=get_state(run).get("started", time.time()), versions=_versions(),
              hardware=_hardware(cluster), dataset=_dataset_summary(data))
    say(f"run folder: {run.root}")
    if cfg.search:
        say(f"recipe search: {cfg.search.num_samples} {cfg.search.algorithm} recipes per experiment, scheduler "
            f"{cfg.search.scheduler}; only each experiment's best trial meets the test split")
    say(f"{len(exps)} experiments on {cluster.nodes} node(s), {cluster.cpus:g} CPUs, {cluster.gpus:g} GPUs; "
        f"{p.max_concurrent} trial(s) at a time, {cfg.resources.workers_per_trial} worker(s) each")
    if cluster.dashboard_url:
        say(f"Ray dashboard: {cluster.dashboard_url}")
    if stock:
        say(f"trials run on Ray's stock TorchTrainer ({stock}): same results, a slower start")
    t0 = time.time()
    try:
        grid = run_sweep(cfg, p, data, run, resume=resume)
    except KeyboardInterrupt:
        set_state(run, "interrupted")
        raise
    trials, epochs, best = collect(grid, p, data, run, search=cfg.search is not None)
    write_table(run.trials, trials, TRIALS_SCHEMA)
    write_table(run.epochs, epochs, EPOCHS_SCHEMA)
    if best:
        write_table(run.predictions, trial_predictions(run, best, data.labels), PREDICTIONS_SCHEMA)
    failed = sum(t["status"] == "failed" for t in trials)
    prior = get_state(run).get("sweep_seconds", 0.0) if resume else 0.0
    set_state(run, "occlusion" if best and cfg.occlusion else "finished" if best else "failed", best=best,
              precision={t["trial"]: t["precision"] for t in trials},
              sweep_seconds=prior + time.time() - t0, data_root=str(data.root))
    if best and cfg.occlusion:
        try:
            occlude(run, cfg.occlusion, data=data, out=out)
        except CnncError as exc:  # the sweep's results stand; say why there are no maps
            say(f"occlusion skipped: {exc}")
            set_state(run, "finished", occlusion_skipped=str(exc))
        set_state(run, "finished")
    return Outcome(run, best, len(trials) - failed, failed)


def occlude(run: RunDir, occ: OcclusionConfig, trial: Optional[str] = None, data: Optional[PackedDataset] = None,
            out: TextIO | None = None) -> list[dict]:
    """The occlusion stage on a finished run's best (or a named) trial; writes occlusion.parquet."""
    from .models import load_trained
    from .occlusion_jobs import check_window, run_occlusion

    state = get_state(run)
    if data is None:
        data = open_packed(state.get("data_root") or state["dataset"]["root"])
        boxes = load_config(run.config).data.boxes
        if boxes is not None:  # the run's object boxes: the verdict needs them again
            from .data.boxes import apply_boxes

            data = apply_boxes(data, boxes)
    check_window(occ, data.image_size)
    known = [t["trial"] for t in read_table(run.trials) if t["status"] == "finished"]
    trial = trial or state.get("best")
    if trial not in known:
        raise CnncError(f"--trial {trial}: no finished trial of that name in {run.root}; "
                        f"finished: {', '.join(known) or 'none'}")
    ensure_ray()
    model, _ = load_trained(run.checkpoint(trial), data.num_classes, data.image_size)
    t0 = time.time()
    parts = run.root / "occlusion.parts"  # finished maps, kept until the table is written
    rows = run_occlusion(model, data, trial_predictions(run, trial, data.labels), occ, trial, out=out, parts=parts)
    write_table(run.occlusion, rows, OCCLUSION_SCHEMA)
    shutil.rmtree(parts, ignore_errors=True)
    # The sweep's tables exist (the trial was found in them), so with the maps the run is complete,
    # also when this finishes an occlusion stage whose driver was killed.
    set_state(run, "finished", occlusion_seconds=time.time() - t0, occlusion=occ.model_dump())
    return rows


def _link_latest(run: RunDir) -> None:
    """``<output root>/latest`` points at the newest run (what ``make demo`` reports on)."""
    link = run.root.parent / "latest"
    tmp = run.root.parent / f".latest.{run.root.name}"
    try:
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(run.root.name)
        tmp.replace(link)
    except OSError:  # a filesystem without symlinks: the printed path is enough
        tmp.unlink(missing_ok=True)


def load_run_config(run: RunDir) -> SweepConfig:
    return load_config(run.config)


def _printer(out: TextIO | None):
    def say(text: str) -> None:
        print(text, file=out or sys.stdout, flush=True)
    return say


def _versions() -> dict:
    import ray
    import torch

    return {"cnnc": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "ray": ray.__version__}


def _hardware(cluster) -> dict:
    return {"host": platform.node(), "machine": platform.machine(), "nodes": cluster.nodes,
            "cpus": cluster.cpus, "gpus": cluster.gpus}


def _dataset_summary(data) -> dict:
    return {"root": str(data.root), "layout": data.info.get("layout"), "classes": data.num_classes,
            "image_size": data.image_size, "counts": data.info.get("counts"),
            "split_rule": data.info.get("split_rule")}


def ensure_not_a_run(path: Path) -> None:
    """Refuse to write into a folder that already holds another run, or to nest runs inside one."""
    path = Path(path)
    if (path / "config.yaml").exists():
        raise CnncError(f"{path}: already holds a run; use --resume {path} or another output name")
    for parent in path.parents:
        if (parent / "config.yaml").is_file() and (parent / "run.json").is_file():
            raise CnncError(f"output.root: {parent} holds another run; runs go beside each other "
                            f"(use its parent folder), or continue it with --resume {parent}")
