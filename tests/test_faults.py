"""Worker faults with a real process kill: the trial restarts from its last checkpoint."""

import os
import signal
import time

import psutil
import pyarrow.parquet as pq
import pytest
import yaml

from tiny import tiny_config
from driver import cleanup, start, wait_for

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
    proc = start(path)
    try:
        wait_for(proc, "a: epoch 1/4")
        os.kill(_train_worker(proc.pid), signal.SIGKILL)  # mid-trial, after the first checkpoint
        out, _ = proc.communicate(timeout=300)
    finally:
        cleanup(proc)
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
    proc = start(path)
    try:
        wait_for(proc, "a: epoch 1/3")
        os.kill(_train_worker(proc.pid), signal.SIGKILL)  # no restarts allowed
        out, _ = proc.communicate(timeout=300)
    finally:
        cleanup(proc)
    assert proc.returncode == 0, out  # one trial finished: the sweep reports
    rows = {t["trial"]: t for t in pq.read_table((tmp_path / "runs" / "latest") / "trials.parquet").to_pylist()}
    assert rows["a"]["status"] == "failed" and rows["a"]["error"]
    assert rows["b"]["status"] == "finished"


def test_killed_trial_driver_is_retried_and_frees_its_placement_group(ray_local, tmp_path):
    """SIGKILL to a Tune trial driver (not a training worker) mid-trial: Tune starts the trial again,
    its Train run resumes from the last checkpoint, and the dead driver's placement group (which no
    dashboard-less cleaner would remove) is released, so nothing stays reserved."""
    import json
    import threading

    import ray
    from ray.util.placement_group import placement_group_table

    from cnn_cluster.config import validate
    from cnn_cluster.run.paths import RunDir
    from cnn_cluster.sweep.submit import submit

    cfg = validate(tiny_config(tmp_path, train={"epochs": 5}, data={"synthetic": {"classes": 4, "images_per_class": 100}},
                               experiments=[{"name": "a", "conv_filters": [8, 16], "fc_layers": [16]}]))
    run = RunDir(tmp_path / "run")
    killed: list[int] = []

    def kill_driver_after_first_epoch() -> None:
        results, end = run.tune / "a" / "result.json", time.time() + 240
        while time.time() < end and not killed:
            lines = results.read_text().splitlines() if results.is_file() else []
            if lines:
                killed.append(json.loads(lines[0])["pid"])
                os.kill(killed[0], signal.SIGKILL)
            time.sleep(0.05)

    killer = threading.Thread(target=kill_driver_after_first_epoch, daemon=True)
    killer.start()
    outcome = submit(cfg, run=run)
    killer.join(timeout=5)
    assert killed, "the trial driver was never seen"
    trial = pq.read_table(run.trials).to_pylist()[0]
    assert outcome.finished == 1 and trial["status"] == "finished"
    assert [e["epoch"] for e in pq.read_table(run.epochs).to_pylist()] == [1, 2, 3, 4, 5]  # each once, none lost
    pids = {json.loads(line)["pid"] for line in (run.tune / "a" / "result.json").read_text().splitlines()}
    assert killed[0] in pids and len(pids) == 2  # a second driver finished it
    end = time.time() + 10  # Tune returns its own trial placement groups a moment after fit()
    while time.time() < end and ray.available_resources().get("CPU") != ray.cluster_resources()["CPU"]:
        time.sleep(0.2)
    assert [pg for pg in placement_group_table().values() if pg["state"] != "REMOVED"] == []
    assert ray.available_resources().get("CPU") == ray.cluster_resources()["CPU"]
