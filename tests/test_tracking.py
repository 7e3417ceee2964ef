"""Experiment tracking against real trackers: a real MLflow server, TensorBoard's own event reader,
W&B's offline files. What each holds is compared with the run's own Parquet tables."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from catalogue import documented
from cnn_cluster.run.io import read_table
from mlflow_server import MlflowServer, free_port
from tiny import tiny_config
from tracked import check_mlflow, check_tensorboard, check_wandb

CNNC = str(Path(sys.executable).with_name("cnnc"))
TOKEN = "cnnc-test-token-5f1c"  # must never reach the run folder or the output


def _config(tmp_path: Path, tracking: dict, **sections) -> Path:
    cfg = tiny_config(tmp_path, train={"epochs": 2}, tracking=tracking, **sections)
    path = tmp_path / "tracked.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _cnnc(*args: str, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([CNNC, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


@pytest.mark.slow
def test_a_sweep_reaches_every_tracker_and_a_second_send_adds_nothing(mlflow_server, tmp_path):
    token = tmp_path / "token"
    token.write_text(TOKEN)
    tracking = {"tensorboard": True, "mlflow": {"experiment": "live", "token_file": str(token)},
                "wandb": {"project": "cnnc-test"}}
    path = _config(tmp_path, tracking)
    r = _cnnc("submit", str(path), "--no-dashboard", "--num-cpus", "2",
              env={"MLFLOW_TRACKING_URI": mlflow_server.uri})  # the section gives no URI: the convention
    assert r.returncode == 0, r.stdout + r.stderr
    run = Path(next(line for line in r.stdout.splitlines() if line.startswith("run folder: ")).split(": ", 1)[1])
    assert f"mlflow: {mlflow_server.uri}/#/experiments/" in r.stdout
    assert f"tensorboard: tensorboard --logdir {run / 'tensorboard'}" in r.stdout
    assert "mlflow: 2 trial(s) sent" in r.stdout and "not sent" not in r.stdout + r.stderr
    check_mlflow(mlflow_server.uri, "live", run)
    check_tensorboard(run)
    check_wandb(run)
    again = _cnnc("track", str(run), env={"MLFLOW_TRACKING_URI": mlflow_server.uri})
    assert again.returncode == 0, again.stdout + again.stderr
    check_mlflow(mlflow_server.uri, "live", run)  # the same runs, each epoch once
    check_tensorboard(run)
    check_wandb(run)
    leaked = [p for p in run.rglob("*") if p.is_file() and TOKEN.encode() in p.read_bytes()]
    assert leaked == [] and TOKEN not in r.stdout + r.stderr + again.stdout + again.stderr


@pytest.mark.slow
def test_a_server_dying_mid_sweep_loses_nothing(tmp_path):
    """Killed after the first epoch: training goes on, the tables are complete, one line says what
    was not sent and how; `cnnc track` then completes the same runs, without duplicates."""
    server = MlflowServer(tmp_path / "mlflow").start()
    cfg = tiny_config(tmp_path, train={"epochs": 4, "batch_size": 16},
                      data={"synthetic": {"classes": 4, "images_per_class": 200}},
                      experiments=[{"name": "a", "conv_filters": [8, 16], "fc_layers": [16]}],
                      tracking={"tensorboard": False, "mlflow": {"tracking_uri": server.uri, "experiment": "dies"}})
    path = tmp_path / "dies.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = subprocess.Popen([CNNC, "submit", str(path), "--no-dashboard", "--num-cpus", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if "a: epoch 1/4 " in line:
                server.stop()
        assert proc.wait(timeout=600) == 0, "".join(lines)
    finally:
        server.stop()
    out = "".join(lines)
    run = Path(next(line for line in lines if line.startswith("run folder: ")).split(": ", 1)[1].strip())
    assert len(read_table(run / "epochs.parquet")) == 4 and read_table(run / "trials.parquet")[0]["status"] == "finished"
    assert out.count("mlflow: stopped sending live") == 1, out
    assert "mlflow: not sent (" in out and f"send it later: cnnc track {run} --mlflow {server.uri}" in out, out
    server.start()  # the same store, the same port
    try:
        for _ in range(2):
            t = _cnnc("track", str(run), "--mlflow", server.uri, "--mlflow-experiment", "dies")
            assert t.returncode == 0, t.stdout + t.stderr
            check_mlflow(server.uri, "dies", run)
    finally:
        server.stop()


def test_tracking_sections_that_cannot_work_are_refused_before_ray(tmp_path, mlflow_server, monkeypatch):
    """`cnnc validate` (and so `cnnc submit`, which checks the same way before Ray starts)."""
    from typer.testing import CliRunner

    from cnn_cluster.cli import app

    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "")  # restored afterwards: a token file sets it

    def validate(tracking: dict):
        return CliRunner().invoke(app, ["validate", str(_config(tmp_path, tracking))])

    def says(r, message: str) -> None:
        assert r.exit_code == 2 and r.output.strip() == "error: " + message, r.output

    says(validate({"neptune": True}), documented("tracking-unknown", FILE=str(tmp_path / "tracked.yaml")))
    dead = f"http://127.0.0.1:{free_port()}"
    says(validate({"mlflow": {"tracking_uri": dead}}),
         documented("tracking-server-down", ADDRESS=dead, REASON="[Errno 111] Connection refused"))
    says(validate({"mlflow": {"tracking_uri": "ftp://x"}}), documented("tracking-bad-uri", FILE=str(tmp_path / "tracked.yaml")))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")
    says(validate({"mlflow": {}}), documented("tracking-no-uri"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.uri)  # the convention, where the section gives none
    r = validate({"mlflow": {}})
    assert r.exit_code == 0 and "tracking: tensorboard, mlflow" in r.output, r.output
    says(validate({"mlflow": {"tracking_uri": mlflow_server.uri, "token_file": str(tmp_path / "nope")}}),
         documented("tracking-token-file", FILE=str(tmp_path / "nope")))
    monkeypatch.setitem(sys.modules, "wandb", None)  # an environment without the wandb extra
    says(validate({"wandb": {}}), documented("tracking-not-installed"))


@pytest.mark.slow
def test_a_resumed_sweep_goes_on_in_the_same_tracked_runs(mlflow_server, tmp_path):
    """Interrupted after trial a's first epoch, resumed: one parent run, one run per trial, each epoch once."""
    cfg = tiny_config(tmp_path, train={"epochs": 3, "batch_size": 16},
                      data={"synthetic": {"classes": 4, "images_per_class": 200}},
                      experiments=[{"name": "a", "conv_filters": [8, 16], "fc_layers": [16]},
                                   {"name": "b", "conv_filters": [8], "fc_layers": [16]}],
                      resources={"max_concurrent_trials": 1},
                      tracking={"tensorboard": False, "mlflow": {"tracking_uri": mlflow_server.uri,
                                                                 "experiment": "resumed"}})
    path = tmp_path / "resumed.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = subprocess.Popen([CNNC, "submit", str(path), "--no-dashboard", "--num-cpus", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if "a: epoch 1/3 " in line:
            proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=300) == 130, "".join(lines)
    run = Path(next(line for line in lines if line.startswith("run folder: ")).split(": ", 1)[1].strip())
    # no tables yet: the trial goes from Tune's record (whose epochs Tune may not have flushed yet)
    sent = _cnnc("track", str(run), "--tensorboard")
    assert sent.returncode == 0 and "tensorboard: 1 trial(s) sent" in sent.stdout, sent.stdout + sent.stderr
    assert (run / "tensorboard" / "a").is_dir()
    r = _cnnc("submit", "--resume", str(run), "--no-dashboard", "--num-cpus", "2")
    assert r.returncode == 0, r.stdout + r.stderr
    check_mlflow(mlflow_server.uri, "resumed", run)
