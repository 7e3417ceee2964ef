"""MLflow: one parent run per sweep, a nested run per trial, found again by their tags.

A trial's run is the one tagged with the run folder and the trial's name; a send adds the params it
lacks, the epochs whose step its ``val_acc`` history lacks, the final metrics it lacks: sending a
run twice, or resuming it, duplicates nothing. MLflow's client retries a dead server for minutes
by default; cnnc asks it for one quick try (the run folder keeps everything, ``cnnc track`` sends
it later)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Optional

from ..config import MlflowConfig
from ..errors import ConfigError
from .base import STATUS, Tracker
from .fields import epoch_metrics, final_metrics

BATCH = 1000  # MLflow's log_batch limit on metrics per call
ROLE = "cnnc.role"


def resolve_uri(cfg: MlflowConfig) -> str:
    uri = cfg.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise ConfigError("tracking.mlflow.tracking_uri: not set, and neither is MLFLOW_TRACKING_URI")
    return uri


def use_credentials(cfg: MlflowConfig) -> None:
    """A token file becomes MLflow's own MLFLOW_TRACKING_TOKEN, in this process only (never the run
    folder or a log line)."""
    if cfg.token_file is not None:
        try:
            os.environ["MLFLOW_TRACKING_TOKEN"] = Path(cfg.token_file).expanduser().read_text().strip()
        except OSError as exc:
            raise ConfigError(f"tracking.mlflow.token_file: {cfg.token_file}: {exc.strerror}") from None


def quick_client(uri: str):
    # one line per tracker is cnnc's to print (the sweep's run URL), not one per trial run ended
    for key, value in (("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0"), ("MLFLOW_HTTP_REQUEST_TIMEOUT", "10"),
                       ("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")):
        os.environ.setdefault(key, value)
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


class MlflowTracker(Tracker):
    name = "mlflow"

    def __init__(self, cfg: MlflowConfig):
        use_credentials(cfg)
        self.uri = resolve_uri(cfg)
        self.experiment_name = cfg.experiment
        self.client = quick_client(self.uri)
        self.experiment_id: Optional[str] = None
        self.parent: Optional[str] = None
        self.run_root = ""
        self.runs: dict[str, str] = {}  # trial -> MLflow run id

    # ------------------------------------------------------------------ runs, found or made

    def open(self, run_root: Path, sweep: str) -> None:
        exp = self.client.get_experiment_by_name(self.experiment_name)
        self.experiment_id = exp.experiment_id if exp else self.client.create_experiment(self.experiment_name)
        self.run_root = str(run_root)
        found = self._find({ROLE: "sweep"})
        self.parent = found or self.client.create_run(
            self.experiment_id, run_name=Path(run_root).name,
            tags={ROLE: "sweep", "cnnc.run_folder": self.run_root, "cnnc.sweep": sweep}).info.run_id

    def _find(self, tags: dict[str, str]) -> Optional[str]:
        filters = " and ".join(f"tags.`{k}` = '{_quote(v)}'" for k, v in
                               {"cnnc.run_folder": self.run_root, **tags}.items())
        runs = self.client.search_runs([self.experiment_id], filter_string=filters, max_results=2,
                                       order_by=["attributes.start_time ASC"])
        return runs[0].info.run_id if runs else None

    def trial(self, trial: str, params: dict[str, str], tags: dict[str, str]) -> None:
        from mlflow.entities import Param

        run_id = self.runs.get(trial) or self._find({ROLE: "trial", "cnnc.trial": trial})
        if run_id is None:
            run_id = self.client.create_run(self.experiment_id, run_name=trial, tags={
                **tags, ROLE: "trial", "mlflow.parentRunId": self.parent}).info.run_id
        self.runs[trial] = run_id
        have = self.client.get_run(run_id).data.params
        new = [Param(k, v[:6000]) for k, v in params.items() if k not in have]
        if new:
            self.client.log_batch(run_id, params=new)

    def epochs(self, trial: str, rows: list[dict]) -> None:
        from mlflow.entities import Metric

        run_id = self.runs[trial]
        have = {m.step for m in self.client.get_metric_history(run_id, "val_acc")}
        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, int(r["epoch"])) for r in rows if int(r["epoch"]) not in have
                   for k, v in epoch_metrics(r).items()]
        for i in range(0, len(metrics), BATCH):
            self.client.log_batch(run_id, metrics=metrics[i:i + BATCH])

    def finish_trial(self, trial: str, row: dict) -> None:
        from mlflow.entities import Metric

        run_id = self.runs[trial]
        have = self.client.get_run(run_id).data.metrics
        now = int(time.time() * 1000)
        final = [Metric(k, v, now, 0) for k, v in final_metrics(row).items() if k not in have]
        if final:
            self.client.log_batch(run_id, metrics=final)
        self.client.set_tag(run_id, "cnnc.status", row["status"])
        self.client.set_terminated(run_id, STATUS.get(row["status"], "FAILED"))

    def close(self, artifacts: list[Path], status: str) -> None:
        for path in artifacts:
            self.client.log_artifact(self.parent, str(path))
        self.client.set_tag(self.parent, "cnnc.status", status)
        end = {"finished": "FINISHED", "failed": "FAILED"}.get(status)
        if end:  # running or interrupted: the parent stays open for the resumed sweep
            self.client.set_terminated(self.parent, end)

    def where(self) -> str:
        if self.uri.startswith("http") and self.parent:
            return f"{self.uri.rstrip('/')}/#/experiments/{self.experiment_id}/runs/{self.parent}"
        return f"mlflow ui --backend-store-uri {self.uri}"


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")
