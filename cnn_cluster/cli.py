"""The ``cnnc`` command: parsing and printing only; the work lives in the modules."""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer

from .errors import CnncError

app = typer.Typer(
    help="Run CNN architecture sweeps and occlusion analysis on Ray, from a laptop to a cluster.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
)
_debug = {"on": False}


@app.callback()
def _main(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of errors.")] = False,
          quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings, errors and results.")] = False,
          verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Also the details behind each step.")] = False,
          ) -> None:
    from . import logs

    _debug["on"] = debug
    logs.configure(logs.QUIET if quiet else logs.VERBOSE if verbose else logs.NORMAL)


def _friendly(fn: Callable) -> Callable:
    """One line and exit code 2 for user errors; a traceback only with --debug."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except CnncError as exc:
            if _debug["on"]:
                raise
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
    return wrapper


ConfigArg = Annotated[Optional[Path], typer.Argument(help="Sweep YAML (see configs/). Omit with --resume.",
                                                     show_default=False)]
AddressOpt = Annotated[Optional[str], typer.Option(
    "--address", envvar="RAY_ADDRESS", show_default=False,
    help="A running cluster: http://HOST:8265 submits a Ray Job; HOST:PORT or 'auto' attaches this process.")]
TokenOpt = Annotated[Optional[Path], typer.Option(
    "--token-file", envvar="RAY_AUTH_TOKEN_PATH", show_default=False,
    help="The cluster's Ray auth token file (token authentication).")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", "-s", metavar="FIELD=VALUE",
                                                     help="Override a config field, e.g. train.lr=0.01 (repeatable).")]


@app.command()
@_friendly
def submit(
    config: ConfigArg = None,
    set_: SetOpt = None,
    resume: Annotated[Optional[Path], typer.Option(help="Continue an interrupted run folder.")] = None,
    num_cpus: Annotated[Optional[int], typer.Option(help="CPUs of the embedded local Ray (default: all).")] = None,
    dashboard: Annotated[bool, typer.Option(help="Start the Ray dashboard (127.0.0.1:8265).")] = True,
    dashboard_host: Annotated[str, typer.Option(
        help="Where the embedded dashboard listens; 0.0.0.0 exposes it (token auth stays on).")] = "127.0.0.1",
    report: Annotated[bool, typer.Option(help="Build the report when the sweep ends.")] = True,
    address: AddressOpt = None,
    token_file: TokenOpt = None,
    trust_shared_run: Annotated[bool, typer.Option(
        help="With --resume: resume a run folder others can write to (a shared lab folder); resuming "
             "unpickles its files, so only do this where everyone who can write it is trusted.")] = False,
) -> None:
    """Train every experiment of CONFIG as a Ray Tune trial with Ray Train workers.

    Without --address on an embedded local Ray; with http://HOST:8265 as a Ray Job
    on that cluster (prints the job id; follow it with cnnc logs JOB --follow).
    """
    from .remote import is_jobs_address, use_token
    from .run.folder import interruptible, prepare
    from .sweep.submit import submit as run_submit
    from .tracking.send import finish as finish_tracking

    use_token(token_file)
    if is_jobs_address(address):
        _submit_job(config, set_ or [], resume, address)
        return
    cfg, run = prepare(config, set_ or [], resume, trust_shared=trust_shared_run)
    try:
        with interruptible(run):
            outcome = run_submit(cfg, run=run, resume=resume is not None, num_cpus=num_cpus, dashboard=dashboard,
                                 address=address, dashboard_host=dashboard_host)
    except KeyboardInterrupt:
        _shutdown_ray()
        typer.echo(f"\ninterrupted; continue with: cnnc submit --resume {run.root}")
        raise typer.Exit(130) from None
    typer.echo(f"results: {outcome.run.root}  ({outcome.counts()})")
    if report and outcome.best:
        _print_report(outcome.run.root)
    finish_tracking(outcome.run, cfg.tracking)  # after the report: its page goes to the trackers too
    if outcome.failed and not outcome.best:
        raise typer.Exit(1)


def _submit_job(config: Optional[Path], overrides: list[str], resume: Optional[Path], address: str) -> None:
    from .config import load_config
    from .remote import absolute_paths, submit_job
    from .run.folder import new_run_dir

    if resume is not None:
        raise CnncError("--resume with a Jobs address: resume on the cluster with "
                        "python jobs/sweep.py --resume RUN_DIR (or cnnc submit --resume from a node)")
    if config is None:
        raise CnncError("give a CONFIG file (e.g. configs/sweep.yaml)")
    cfg = absolute_paths(load_config(config, overrides))
    job = submit_job(cfg, new_run_dir(cfg).root, address)
    typer.echo(f"submitted job {job.job_id} to {address}")
    typer.echo(f"results will land in {job.run_dir} (a path on the cluster's filesystem)")
    typer.echo(f"follow it: cnnc logs {job.job_id} --follow --address {address}")


jobs_help = "Job id printed by cnnc submit --address."


@app.command()
@_friendly
def status(job: Annotated[str, typer.Argument(help=jobs_help)], address: AddressOpt = None,
           token_file: TokenOpt = None) -> None:
    """State of a sweep submitted as a Ray Job (PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED)."""
    from .remote import status as job_status

    info = job_status(_jobs_address(address, token_file), job)
    typer.echo(f"{info['job_id']}: {info['status']}" + (f"  ({info['message']})" if info["message"] else ""))
    if info["run_dir"]:
        typer.echo(f"results: {info['run_dir']}")


@app.command()
@_friendly
def logs(job: Annotated[str, typer.Argument(help=jobs_help)], address: AddressOpt = None,
         token_file: TokenOpt = None,
         follow: Annotated[bool, typer.Option("--follow", "-f", help="Stream until the job ends.")] = False) -> None:
    """Output of a sweep submitted as a Ray Job."""
    from .remote import follow as follow_logs
    from .remote import logs as job_logs

    addr = _jobs_address(address, token_file)
    if follow:
        follow_logs(addr, job, lambda chunk: typer.echo(chunk, nl=False))
    else:
        typer.echo(job_logs(addr, job), nl=False)


@app.command()
@_friendly
def stop(job: Annotated[str, typer.Argument(help=jobs_help)], address: AddressOpt = None,
         token_file: TokenOpt = None) -> None:
    """Stop a sweep submitted as a Ray Job; its finished trials stay in the run folder."""
    from .remote import stop as stop_job

    stopped = stop_job(_jobs_address(address, token_file), job)
    typer.echo(f"{job}: {'stop requested' if stopped else 'already ended'}")


def _jobs_address(address: Optional[str], token_file: Optional[Path]) -> str:
    from .remote import is_jobs_address, use_token

    if not address:
        raise CnncError("--address: give the cluster's dashboard, e.g. http://127.0.0.1:8265 (or set RAY_ADDRESS)")
    if not is_jobs_address(address):
        raise CnncError(f"--address {address}: the Jobs API needs the dashboard's http://HOST:PORT address")
    use_token(token_file)
    return address


def _shutdown_ray() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()


@app.command("report")
@_friendly
def report_cmd(
    run_dirs: Annotated[list[Path], typer.Argument(help="Run folder(s) written by cnnc submit.")],
    out: Annotated[Optional[Path], typer.Option(help="Where a comparison of several runs goes.")] = None,
    boxes: Annotated[Optional[Path], typer.Option(help="Object boxes (the page's boxes.csv, or data.boxes' "
                                                       "format): the verdict from the maps already drawn.")] = None,
) -> None:
    """Print the experiments table and write report/ (index.html, README.md, tables, figures).

    With several runs, also write one page that puts them side by side.
    """
    from .report.build import build_comparison
    from .run.paths import open_run

    if boxes is not None:
        if len(run_dirs) != 1:
            raise CnncError("--boxes: name one run (the boxes belong to its analysed images)")
        from .attribution.stage import apply_drawn_boxes

        apply_drawn_boxes(open_run(run_dirs[0]), boxes)
    for run_dir in run_dirs:
        _print_report(run_dir)
    if len(run_dirs) > 1:
        path = build_comparison([open_run(r) for r in run_dirs], out or Path("report-compare"))
        typer.echo(f"comparison page: {path}")


@app.command()
@_friendly
def track(
    run_dir: Annotated[Path, typer.Argument(help="A run folder, finished or interrupted.")],
    mlflow: Annotated[Optional[str], typer.Option(
        "--mlflow", metavar="URI", help="An MLflow server (http://HOST:PORT) or store (file:, sqlite:).")] = None,
    mlflow_experiment: Annotated[Optional[str], typer.Option(help="The MLflow experiment (default: the run's "
                                                                   "tracking section's, else cnnc).")] = None,
    tensorboard: Annotated[bool, typer.Option("--tensorboard", help="Write RUN/tensorboard/ event files.")] = False,
    wandb: Annotated[bool, typer.Option("--wandb", help="Weights & Biases (the run's wandb settings, else "
                                                        "offline, project cnnc).")] = False,
) -> None:
    """Send a run's tables to experiment trackers, after the fact.

    What a tracker holds already is not sent again, so a run tracked live (or half-sent while a server
    was down) is completed, not duplicated. Without options: the run's own tracking section.
    """
    from .run.paths import open_run
    from .tracking.send import track_run

    run = open_run(run_dir)
    failed = track_run(run, mlflow=mlflow, mlflow_experiment=mlflow_experiment, tensorboard=tensorboard,
                       wandb=wandb)
    if failed:
        raise typer.Exit(1)


def _print_report(run_dir: Path) -> None:
    from .report.build import build_report
    from .run.paths import open_run

    rep = build_report(open_run(run_dir))
    typer.echo(rep.table)
    for note in rep.notes:
        typer.echo(f"note: {note}")
    typer.echo(f"report page: {rep.page}")


@app.command()
@_friendly
def occlude(
    run_dir: Annotated[Path, typer.Argument(help="A finished run folder.")],
    trial: Annotated[Optional[str], typer.Option(help="Trial to analyse (default: the best).")] = None,
    count: Annotated[Optional[int], typer.Option(help="Correctly classified images to map.")] = None,
    window: Annotated[Optional[int], typer.Option(help="Occlusion window N (pixels).")] = None,
    stride: Annotated[Optional[int], typer.Option(help="Window stride S (pixels).")] = None,
    fill: Annotated[Optional[str], typer.Option(help="mean | gray | zero | blur.")] = None,
    select: Annotated[Optional[str], typer.Option(help="random | confident | per_class.")] = None,
    misclassified: Annotated[Optional[int], typer.Option(help="Also map this many errors.")] = None,
    methods: Annotated[Optional[str], typer.Option(
        help="Comma-separated: occlusion, saliency, integrated_gradients, grad_cam.")] = None,
    grad_cam_layer: Annotated[Optional[str], typer.Option(help="Grad-CAM's conv layer (default: the last).")] = None,
    sanity_images: Annotated[Optional[int], typer.Option(help="Images given the randomisation check.")] = None,
    boxes: Annotated[Optional[Path], typer.Option(help="Object boxes (the report page's boxes.csv): score the maps "
                                                       "already computed, without computing them again.")] = None,
    report: Annotated[bool, typer.Option(help="Rebuild the report afterwards.")] = True,
) -> None:
    """Attribution maps of a trained model's test images (Part B): occlusion, and the methods named."""
    from .attribution.stage import apply_drawn_boxes
    from .attribution.stage import occlude as run_occlude
    from .config import OcclusionConfig, load_config
    from .run.paths import open_run

    run = open_run(run_dir)
    if boxes is not None:
        apply_drawn_boxes(run, boxes)
    else:
        base = load_config(run.config).occlusion or OcclusionConfig()
        given = {"count": count, "window": window, "stride": stride, "fill": fill, "select": select,
                 "misclassified": misclassified, "grad_cam_layer": grad_cam_layer, "sanity_images": sanity_images,
                 "methods": [m.strip() for m in methods.split(",")] if methods is not None else None}
        occ = _occlusion_config(base, {k: v for k, v in given.items() if v is not None})
        run_occlude(run, occ, trial=trial)
    typer.echo(f"occlusion: {run.occlusion}")
    if report:
        _print_report(run.root)


def _occlusion_config(base, changes: dict):
    from pydantic import ValidationError

    from .config import OcclusionConfig

    try:
        return OcclusionConfig.model_validate({**base.model_dump(), **changes})
    except ValidationError as exc:
        err = exc.errors()[0]
        raise CnncError(f"--{str(err['loc'][0]).replace('_', '-')}: {err['msg']} (got {err.get('input')!r})") from None


@app.command()
@_friendly
def validate(config: Annotated[Path, typer.Argument(help="Sweep YAML to check.")],
             set_: SetOpt = None) -> None:
    """Check a config without running it; print the experiments it expands to."""
    from .config import load_config
    from .data import expected_classes
    from .models import experiment_shapes
    from .tracking.check import check_tracking

    cfg = load_config(config, set_ or [])
    check_tracking(cfg.tracking)
    if cfg.data.boxes is not None:  # a file the run would read only at Part B, hours in
        from .data.boxes import read_boxes

        read_boxes(cfg.data.boxes)
    exps = cfg.resolved_experiments()
    try:
        sizes = experiment_shapes(exps, cfg.data.image_size, expected_classes(cfg.data))
        if cfg.occlusion:
            from .attribution.check import check_occlusion

            check_occlusion(cfg.occlusion, exps, cfg.data.image_size, expected_classes(cfg.data))
    except CnncError as exc:
        raise CnncError(f"{config}: {exc}") from None
    for exp, s in zip(exps, sizes):
        typer.echo(f"{exp.name}: conv {list(exp.model.conv_filters)} fc {list(exp.model.fc_layers)} "
                   f"pool={'yes' if exp.model.max_pool else 'no'} stride {exp.model.stride} "
                   f"epochs {exp.train.epochs}: {s.params / 1e6:.2f}M params, {s.flops / 1e6:.0f} MFLOPs/image")
    if cfg.search:
        n, s_ = len(exps), cfg.search
        typer.echo(f"search: {s_.num_samples} {s_.algorithm} recipes per experiment ({n * s_.num_samples} trials, at "
                   f"most {sum(e.train.epochs for e in exps) * s_.num_samples} epochs), scheduler {s_.scheduler}, "
                   f"over {', '.join(s_.space)}")
    trackers = [name for name in ("tensorboard", "mlflow", "wandb") if getattr(cfg.tracking, name)]
    typer.echo(f"tracking: {', '.join(trackers) or 'none'}")
    typer.echo(f"{config}: ok")


data_app = typer.Typer(help="Prepare and inspect datasets (mini-ImageNet layouts, the packed format).",
                       no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("prepare")
@_friendly
def data_prepare(
    source: Annotated[Path, typer.Argument(help="mini-ImageNet in any published layout.")],
    out: Annotated[Path, typer.Option(help="Folder for the packed dataset.")],
    image_size: Annotated[int, typer.Option(help="Side of the square images (84 = mini-ImageNet).")] = 84,
    fmt: Annotated[str, typer.Option("--format", help="auto | csv | folders | pickle | parquet.")] = "auto",
    seed: Annotated[int, typer.Option(help="Seed of the per-class split.")] = 0,
) -> None:
    """Decode every image once into the packed format (idempotent)."""
    import json

    from .data.miniimagenet import LAYOUTS, log_progress, prepare

    if fmt not in ("auto", *LAYOUTS):
        raise CnncError(f"--format: must be one of auto, {', '.join(LAYOUTS)} (got {fmt!r})")
    if image_size < 8:
        raise CnncError(f"--image-size: must be >= 8 (got {image_size})")
    path, reused = prepare(source, out, image_size, fmt, seed=seed, progress=log_progress)
    if reused:
        typer.echo(f"{path}: already prepared from the same files and options; reused")
        return
    report = json.loads((path / "prepare-report.json").read_text())
    typer.echo(f"packed {report['images_kept']} of {report['images_found']} images -> {path}")
    if report["skipped_count"] or report["small_classes"]:
        typer.echo(f"skipped {report['skipped_count']} entries, {len(report['small_classes'])} small classes: "
                   f"see {path / 'prepare-report.json'}")
    _print_info(path)


@data_app.command("info")
@_friendly
def data_info(path: Annotated[Path, typer.Argument(help="A packed dataset folder.")]) -> None:
    """Images per split, classes, images per class, size, mean/std, layout and split rule."""
    _print_info(path)


def _print_info(path: Path) -> None:
    import numpy as np

    from .data import SPLITS, open_packed

    d = open_packed(path)
    per_class = np.bincount(d.labels, minlength=d.num_classes)
    typer.echo(f"dataset:      {d.root}")
    typer.echo(f"layout:       {d.info.get('layout')}")
    typer.echo(f"split rule:   {d.info.get('split_rule')}")
    typer.echo(f"images:       {len(d.labels)}  ({', '.join(f'{s} {len(d.indices(s))}' for s in SPLITS)})")
    typer.echo(f"classes:      {d.num_classes}  (images per class: min {per_class.min()}, max {per_class.max()})")
    typer.echo(f"class names:  {', '.join(d.class_names[:4])}{', ...' if d.num_classes > 4 else ''}")
    typer.echo(f"image size:   {d.image_size}x{d.image_size}")
    typer.echo(f"mean / std:   {tuple(round(m, 4) for m in d.mean)} / {tuple(round(s, 4) for s in d.std)}")


slurm_app = typer.Typer(help="What slurm/ray-cluster.sbatch asks of a job's run folder (not for typing).",
                        no_args_is_help=True)
app.add_typer(slurm_app, name="slurm", hidden=True)
RunFileArg = Annotated[Path, typer.Argument(help="The job's run file (.cnnc-jobs/<job id>/run).")]


@slurm_app.command("start")
def slurm_start(run_file: RunFileArg) -> None:
    """A requeued start's action: fresh | resume RUN | exit CODE (why on stderr)."""
    from .run.slurm_job import start_action

    action, why = start_action(run_file)
    typer.echo(f"[cnnc] {why}", err=True)
    typer.echo(action)


@slurm_app.command("settle")
def slurm_settle(run_file: RunFileArg, after: Annotated[Optional[int], typer.Option(
        help="Wait for this process (the driver) to be gone first.")] = None) -> None:
    """The run's state once its driver is gone, recording an interruption it could not record."""
    from .run.slurm_job import recorded_run, settle, wait_gone

    if after is not None:
        wait_gone(after)
    run = recorded_run(run_file)
    typer.echo(settle(run) if run else "none")


def main() -> None:  # pragma: no cover - console entry point
    app(prog_name="cnnc")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
