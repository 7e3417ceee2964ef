"""A run's tables to trackers, after the fact (``cnnc track``) and at the end of every sweep.

Finished runs send their Parquet tables; an interrupted run, which has none yet, sends what Tune
recorded of each trial's epochs (its ``result.json``), leaving the trials' tracked runs open for the
resumed sweep. Each tracker finds what it holds already, so a second send adds only what is missing.
"""

from __future__ import annotations

import json
from typing import Optional

from .. import logs
from ..config import Experiment, SweepConfig, TrackingConfig, load_config
from ..errors import CnncError
from ..run.paths import RunDir
from ..run.read import RunData, read_run
from ..run.reports import EpochReport, parse
from .base import Tracker
from .fields import experiment_params, row_params, tags

log = logs.get("tracking")


def make_trackers(tracking: TrackingConfig, run: RunDir) -> list[Tracker]:
    """The trackers a ``tracking`` section asks for (checked already: check.py)."""
    out: list[Tracker] = []
    if tracking.tensorboard:
        from .to_tensorboard import TensorBoardTracker

        out.append(TensorBoardTracker(run.root / "tensorboard"))
    if tracking.mlflow is not None:
        from .to_mlflow import MlflowTracker

        out.append(MlflowTracker(tracking.mlflow))
    if tracking.wandb is not None:
        from .to_wandb import WandbTracker

        out.append(WandbTracker(tracking.wandb, run.root))
    return out


def send_run(run: RunData, tracker: Tracker, interrupted: dict[str, tuple] | None = None) -> int:
    """Send the run (read once by the caller) to ``tracker``; ``interrupted``: :func:`tune_trials`,
    where the run has no tables yet. Returns the number of trials sent. Raises what the tracker raises."""
    root = run.run.root
    tracker.open(root, sweep_name(run.run, run.config))
    if run.trials:
        epochs: dict[str, list[dict]] = {}
        for e in run.epochs:
            epochs.setdefault(e["trial"], []).append(e)
        for t in run.trials:
            tracker.rebuild(t["trial"])
            tracker.trial(t["trial"], row_params(t), tags(str(root), t["trial"], t.get("experiment"),
                                                          t.get("sample"), t.get("node")))
            tracker.epochs(t["trial"], sorted(epochs.get(t["trial"], []), key=lambda e: e["epoch"]))
            tracker.finish_trial(t["trial"], t)
    else:  # interrupted before the tables: Tune's record of each trial's epochs
        for name, (exp, config, rows) in (interrupted or {}).items():
            tracker.rebuild(name)
            tracker.trial(name, experiment_params(exp, config.get("values")),
                          tags(str(root), name, config.get("group"), config.get("sample")))
            tracker.epochs(name, rows)
    report = run.run.report
    files = [run.run.config, report / "index.html", report / "experiments.csv"]
    tracker.close([f for f in files if f.is_file()], run.state.get("state", "interrupted"))
    return len(run.trials) or len(interrupted or {})


def tune_trials(run: RunDir) -> dict[str, tuple[Experiment, dict, list[dict]]]:
    """trial -> (its experiment, its Tune config, its epochs as epochs.parquet rows), from Tune's
    per-trial files; each epoch once (a restarted trial's last report of it)."""
    out = {}
    for params in sorted(run.tune.glob("*/params.json")):
        config = json.loads(params.read_text())
        exp = Experiment.model_validate(config["experiment"])
        reports: dict[int, EpochReport] = {}
        result = params.with_name("result.json")
        for line in (result.read_text().splitlines() if result.is_file() else []):
            try:
                r = parse(json.loads(line))
            except ValueError:  # a line cut short by the interruption
                continue
            if isinstance(r, EpochReport):
                reports[r.epoch] = r
        out[exp.name] = (exp, config, [reports[e].row(exp.name) for e in sorted(reports)])
    return out


def send_all(run: RunDir, trackers: list[Tracker], cli_hint: dict[str, str]) -> list[str]:
    """Send the run to each tracker; a tracker that fails is named in one line (with the command
    that sends it later) and the others go on. Returns the names of those that failed."""
    failed = []
    data = read_run(run)  # once for every tracker
    interrupted = tune_trials(run) if not data.trials else None
    for tracker in trackers:
        try:
            n = send_run(data, tracker, interrupted)
        except Exception as exc:  # any tracker error: the run folder has it all, cnnc track resends
            failed.append(tracker.name)
            log.warning(f"{tracker.name}: not sent ({reason(exc)}); send it later: "
                        f"cnnc track {run.root} {cli_hint.get(tracker.name, '--' + tracker.name)}")
            continue
        where = tracker.where()
        log.info(f"{tracker.name}: {n} trial(s) sent" + (f"; {where}" if where else ""))
    return failed


def sweep_name(run: RunDir, config: Optional[SweepConfig] = None) -> str:
    """The sweep's name (its config's), or the run folder's where the config no longer reads."""
    if config is not None:
        return config.name
    try:
        return load_config(run.config).name
    except CnncError:
        return run.root.name


def reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def cli_hints(tracking: TrackingConfig, uri: Optional[str] = None) -> dict[str, str]:
    hints = {"tensorboard": "--tensorboard", "wandb": "--wandb"}
    if tracking.mlflow is not None:
        hints["mlflow"] = f"--mlflow {uri or tracking.mlflow.tracking_uri or '$MLFLOW_TRACKING_URI'}"
    return hints


def announce(run: RunDir, tracking: TrackingConfig) -> None:
    """One line per tracker as the sweep starts: where to look (the MLflow run's URL, the TensorBoard
    command); a tracker that cannot open says so and the sweep goes on (the end sends again)."""
    for tracker in make_trackers(tracking, run):
        try:
            tracker.open(run.root, sweep_name(run))
        except Exception as exc:  # any tracker error: nothing is lost, the end of the sweep retries
            log.warning(f"{tracker.name}: cannot open the sweep's run ({reason(exc)}); training goes on")
            continue
        where = tracker.where()
        if where:
            log.info(f"{tracker.name}: {where}")


def finish(run: RunDir, tracking: TrackingConfig) -> list[str]:
    """The sweep's end: its tables, statuses and files (the report, where built) to every tracker."""
    return send_all(run, make_trackers(tracking, run), cli_hints(tracking))


def track_run(run: RunDir, mlflow: Optional[str] = None, mlflow_experiment: Optional[str] = None,
              tensorboard: bool = False, wandb: bool = False) -> list[str]:
    """``cnnc track``: the trackers named (else the run's own section), checked, then sent to."""
    from pydantic import ValidationError

    from .check import check_tracking

    own = _own_tracking(run)
    if not (mlflow or tensorboard or wandb):
        tracking = own
    else:
        section: dict = {"tensorboard": tensorboard}
        if mlflow:
            base = own.mlflow.model_dump() if own.mlflow else {}
            section["mlflow"] = {**base, "tracking_uri": mlflow,
                                 **({"experiment": mlflow_experiment} if mlflow_experiment else {})}
        if wandb:
            section["wandb"] = own.wandb.model_dump() if own.wandb else {}
        try:
            tracking = TrackingConfig.model_validate(section)
        except ValidationError as exc:
            err = exc.errors()[0]
            flag = "--mlflow" if "mlflow" in err["loc"] else "--" + str(err["loc"][0])
            raise CnncError(f"{flag}: {err['msg'].removeprefix('Value error, ')}") from None
    check_tracking(tracking)
    return send_all(run, make_trackers(tracking, run), cli_hints(tracking, mlflow))


def _own_tracking(run: RunDir) -> TrackingConfig:
    try:
        return load_config(run.config).tracking
    except CnncError:
        return TrackingConfig()
