"""Driver faults with real processes and real signals: SIGKILL, SIGINT, resume."""

import os
import re
import signal
import shutil
import subprocess
import tempfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from cnn_cluster.config import load_config
from cnn_cluster.run.paths import RunDir
from cnn_cluster.run.state import get_state
from cnn_cluster.sweep.submit import submit
from driver import CNNC, cleanup, start, wait_for
from tiny import tiny_config

pytestmark = pytest.mark.slow


def _tables(run: Path) -> tuple[list, list]:
    trials = [(t["trial"], t["status"]) for t in pq.read_table(run / "trials.parquet").to_pylist()]
    epochs = [(e["trial"], e["epoch"]) for e in pq.read_table(run / "epochs.parquet").to_pylist()]
    return trials, epochs


@pytest.fixture
def sweep(tmp_path) -> Path:
    cfg = tiny_config(tmp_path, train={"epochs": 2}, experiments=[
        {"name": "a", "conv_filters": [4], "fc_layers": [8]},
        {"name": "b", "conv_filters": [8], "fc_layers": [], "max_pool": False, "stride": 2}],
        resources={"workers_per_trial": 2, "cpus_per_worker": 1})  # one trial at a time
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_sigkill_then_resume_matches_an_uninterrupted_run(sweep, tmp_path, ray_local):
    proc = start(sweep)
    try:
        wait_for(proc, "a: finished")
        os.kill(proc.pid, signal.SIGKILL)  # the driver only, mid-sweep
        proc.wait(30)
    finally:
        cleanup(proc)
    run = (tmp_path / "runs" / "latest").resolve()
    assert not (run / "trials.parquet").exists()  # nothing half-written that looks finished
    assert get_state(RunDir(run))["state"] == "interrupted"  # its driver is gone, whatever the file says
    resumed = subprocess.run([CNNC, "submit", "--resume", str(run), "--no-dashboard", "--no-report",
                              "--num-cpus", "2"], capture_output=True, text=True, timeout=400)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "a: epoch" not in resumed.stdout and "a: test accuracy" not in resumed.stdout  # not run again
    # The uninterrupted reference, in this process on the session's Ray, both trials at once
    # (one worker each): the tables compared hold the same trials, states and epochs.
    cfg = load_config(sweep, [f"output.root={tmp_path / 'again'}", "resources.workers_per_trial=1"])
    assert submit(cfg).failed == 0
    assert _tables(run) == _tables((tmp_path / "again" / "latest").resolve())
    assert _tables(run)[1] == [(t, e) for t in "ab" for e in (1, 2)]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_stops_cleanly_and_says_how_to_resume(sweep, tmp_path, sig):
    """Ctrl-C, and SIGTERM (a SLURM time limit; Ray's driver would abort on it unhandled)."""
    temp = Path(tempfile.mkdtemp(prefix="t", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    proc = start(sweep, TMPDIR=str(temp))
    try:
        wait_for(proc, "a: epoch 1/2")
        assert len(list(temp.glob("cnnc-ray-*"))) == 1  # the private cluster's folder
        os.kill(proc.pid, sig)
        out, _ = proc.communicate(timeout=120)
    finally:
        cleanup(proc)
        left = list(temp.glob("cnnc-ray-*"))
        shutil.rmtree(temp, ignore_errors=True)
    assert not left  # removed with the cluster
    assert proc.returncode == 130, out
    assert "cnnc submit --resume" in out and "Traceback" not in out
    run = (tmp_path / "runs" / "latest").resolve()
    assert yaml.safe_load((run / "run.json").read_text())["state"] == "interrupted"


def test_resume_keeps_finished_occlusion_maps(tmp_path):
    cfg = tiny_config(tmp_path, experiments=[{"name": "a", "conv_filters": [8], "fc_layers": []}],
                      data={"synthetic": {"classes": 4, "images_per_class": 60}}, train={"epochs": 2},
                      occlusion={"count": 4, "misclassified": 2, "window": 8, "stride": 1, "workers": 1})
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = start(path)
    try:
        lines = wait_for(proc, "occlusion 2/")
        os.kill(proc.pid, signal.SIGKILL)  # the driver, mid-occlusion
        proc.wait(30)
    finally:
        cleanup(proc)
    total = int(re.search(r"occlusion: (\d+) maps", "".join(lines)).group(1))
    run = (tmp_path / "runs" / "latest").resolve()
    assert not (run / "occlusion.parquet").exists()
    resumed = subprocess.run([CNNC, "submit", "--resume", str(run), "--no-dashboard", "--no-report",
                              "--num-cpus", "2"], capture_output=True, text=True, timeout=400)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    kept = int(re.search(r"occlusion: (\d+) of (\d+) maps kept", resumed.stdout).group(1))
    assert kept >= 2 and f"occlusion: {total - kept} maps on" in resumed.stdout  # the rest only
    assert "a: epoch" not in resumed.stdout  # the finished trial is not trained again
    rows = pq.read_table(run / "occlusion.parquet").to_pylist()
    assert len(rows) == total and not (run / "occlusion.parts").exists()
