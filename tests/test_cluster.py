"""A real two-node Ray cluster on one machine, with token auth, driven through the Ray Jobs API."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from cnn_cluster.run.paths import RunDir
from cnn_cluster.run.state import get_state
from cnn_cluster.run.io import read_table

from catalogue import documented
from tiny import tiny_config
from raycluster import RayCluster

pytestmark = pytest.mark.slow
CNNC = [sys.executable, "-m", "cnn_cluster.cli"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = RayCluster(tmp_path_factory.mktemp("two-nodes"), head_cpus=1)
    try:
        c.add_node(cpus=1)
        yield c
    finally:
        c.stop()
    assert not c.pids(), "processes of the test cluster outlived it"


def _cnnc(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*CNNC, *args], capture_output=True, text=True, timeout=timeout,
                          env=_env_without_ray())


def _env_without_ray() -> dict:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}


def _auth(c: RayCluster) -> list[str]:
    return ["--address", c.dashboard, "--token-file", str(c.token_file)]


def test_requests_without_the_token_are_refused(cluster):
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{cluster.dashboard}/api/jobs/", timeout=10)
    assert err.value.code == 401
    r = _cnnc("status", "whatever", "--address", cluster.dashboard)
    assert r.returncode == 2 and r.stderr == f"error: {documented('missing-token', ADDRESS=cluster.dashboard)}\n"
    assert "Traceback" not in r.stderr
    bad = cluster.root / "wrong_token"
    bad.write_text("0" * 64)
    r = _cnnc("status", "whatever", "--address", cluster.dashboard, "--token-file", str(bad))
    assert r.returncode == 2 and "refused" in r.stderr


def test_unknown_job_and_unreachable_address(cluster):
    r = _cnnc("status", "no-such-job", *_auth(cluster))
    assert r.returncode == 2
    assert r.stderr == f"error: {documented('unknown-job', JOB='no-such-job', ADDRESS=cluster.dashboard)}\n"
    r = _cnnc("logs", "x", "--address", "http://127.0.0.1:9")
    assert r.returncode == 2 and "cannot reach" in r.stderr and "Traceback" not in r.stderr


def test_jobs_sweep_and_occlusion_use_both_nodes(cluster, tmp_path):
    cfg = tiny_config(tmp_path, occlusion={"count": 2, "misclassified": 2, "window": 8, "stride": 8, "workers": 2})
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    r = _cnnc("submit", str(path), *_auth(cluster), "--set", "train.seed=3")
    assert r.returncode == 0, r.stderr
    job = re.search(r"submitted job (\S+)", r.stdout).group(1)
    run = Path(re.search(r"results will land in (\S+)", r.stdout).group(1))
    follow = _cnnc("logs", job, "--follow", *_auth(cluster))
    assert follow.returncode == 0 and "sweep done" in follow.stdout, follow.stdout + follow.stderr
    st = _cnnc("status", job, *_auth(cluster))
    assert f"{job}: SUCCEEDED" in st.stdout and str(run) in st.stdout
    trials = read_table(run / "trials.parquet")
    assert [t["status"] for t in trials] == ["finished", "finished"] and trials[0]["seed"] == 3
    assert len({t["node_id"] for t in trials}) == 2  # one trial on each node
    maps = read_table(run / "occlusion.parquet")
    assert len(maps) >= 2 and len({m["node_id"] for m in maps}) == 2  # occlusion on both nodes
    assert "run folder:" in _cnnc("logs", job, *_auth(cluster)).stdout
    started = cluster.actor_classes()  # Train's controller runs in the trial driver; with a dashboard
    assert "PlacementGroupCleaner" in started and "TrainController" not in started  # the cleaner can work


def test_stop_a_running_job(cluster, tmp_path):
    cfg = tiny_config(tmp_path, train={"epochs": 300})
    path = tmp_path / "long.yaml"
    path.write_text(yaml.safe_dump(cfg))
    r = _cnnc("submit", str(path), *_auth(cluster))
    job = re.search(r"submitted job (\S+)", r.stdout).group(1)
    end = time.time() + 120
    while time.time() < end and "RUNNING" not in _cnnc("status", job, *_auth(cluster)).stdout:
        time.sleep(1)
    time.sleep(5)  # into the sweep
    assert "stop requested" in _cnnc("stop", job, *_auth(cluster)).stdout
    end = time.time() + 60
    while time.time() < end and "STOPPED" not in (st := _cnnc("status", job, *_auth(cluster)).stdout):
        time.sleep(1)
    assert f"{job}: STOPPED" in st
    run = Path(re.search(r"results will land in (\S+)", r.stdout).group(1))
    end = time.time() + 30  # the stop's SIGTERM reached the driver, which recorded it
    while time.time() < end and get_state(RunDir(run)).get("state") != "interrupted":
        time.sleep(0.5)
    assert get_state(RunDir(run))["state"] == "interrupted"
