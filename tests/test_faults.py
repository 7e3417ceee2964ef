"""Worker faults with a real process kill: the trial restarts from its last checkpoint."""

import os
import signal
import time

import psutil
import pyarrow.parquet as pq
import pytest
import yaml

from conftest import tiny_config
from test_resume import _cleanup, _start, _wait_for

pytestmark = pytest.mark.slow


def _train_worker(driver: int, timeout: float = 60) -> int:
    """The Ray Train worker among the driver's own descendants (never anyone else's), by PID."""
    end = time.time() + timeout
    while time.time() < end:
        for proc in psutil.Process(driver).children(recursive=True):
            try:
                if "RayTrainWorker" in " ".join(proc.cmdline()):
                    return proc.pid
            except psutil.Error:  # exited meanwhile
                continue
        time.sleep(0.2)
    raise AssertionError("no RayTrainWorker process under the driver")


def test_killed_worker_restarts_from_checkpoint(tmp_path):
    cfg = tiny_config(tmp_path, train={"epochs": 4}, data={"synthetic": {"classes": 4, "images_per_class": 60}},
                      experiments=[{"name": "a", "conv_filters": [8, 16], "fc_layers": [16]}])
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = _start(path)
    try:
        _wait_for(proc, "a: epoch 1/4")
        os.kill(_train_worker(proc.pid), signal.SIGKILL)  # mid-trial, after the first checkpoint
        out, _ = proc.communicate(timeout=300)
    finally:
        _cleanup(proc)
    assert proc.returncode == 0, out
    run = (tmp_path / "runs" / "latest").resolve()
    trials = pq.read_table(run / "trials.parquet").to_pylist()
    assert trials[0]["status"] == "finished" and trials[0]["best_epoch"] >= 1
    epochs = [e["epoch"] for e in pq.read_table(run / "epochs.parquet").to_pylist()]
    assert epochs == [1, 2, 3, 4]  # each epoch once, none lost


def test_trial_failing_too_often_is_marked_failed_and_others_finish(tmp_path):
    cfg = tiny_config(tmp_path, train={"epochs": 3}, resources={"max_failures": 0},
                      data={"synthetic": {"classes": 4, "images_per_class": 60}},
                      experiments=[{"name": "a", "conv_filters": [8, 16], "fc_layers": [16]},
                                   {"name": "b", "conv_filters": [4], "fc_layers": []}])
    cfg["resources"]["max_concurrent_trials"] = 1
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = _start(path)
    try:
        _wait_for(proc, "a: epoch 1/3")
        os.kill(_train_worker(proc.pid), signal.SIGKILL)  # no restarts allowed
        out, _ = proc.communicate(timeout=300)
    finally:
        _cleanup(proc)
    assert proc.returncode == 0, out  # one trial finished: the sweep reports
    rows = {t["trial"]: t for t in pq.read_table((tmp_path / "runs" / "latest") / "trials.parquet").to_pylist()}
    assert rows["a"]["status"] == "failed" and rows["a"]["error"]
    assert rows["b"]["status"] == "finished"
