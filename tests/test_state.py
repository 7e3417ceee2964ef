"""A run's recorded state against the real processes it names: a killed driver reads 'interrupted'."""

import json
import os
import signal
import subprocess
import sys
import time

import psutil

from cnn_cluster.run.paths import RunDir
from cnn_cluster.run.state import get_state, set_state

RECORD_AND_WAIT = ("import sys, time; from pathlib import Path; from cnn_cluster.run.paths import RunDir; "
                   "from cnn_cluster.run.state import set_state; "
                   "set_state(RunDir(Path(sys.argv[1])), 'running'); time.sleep(120)")


def _driver(run: RunDir) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", RECORD_AND_WAIT, str(run.root)])
    end = time.time() + 30
    while time.time() < end and not run.state.is_file():
        time.sleep(0.05)
    return proc


def test_a_live_driver_reads_running_and_a_killed_one_interrupted(tmp_path):
    run = RunDir(tmp_path)
    proc = _driver(run)
    try:
        assert get_state(run)["state"] == "running"
        os.kill(proc.pid, signal.SIGKILL)
        end = time.time() + 10  # not reaped yet: a zombie has exited all the same
        while time.time() < end and psutil.Process(proc.pid).status() != psutil.STATUS_ZOMBIE:
            time.sleep(0.05)
        assert get_state(run)["state"] == "interrupted"
        proc.wait(10)
        state = get_state(run)
        assert state["state"] == "interrupted" and state["interrupted_by"] == "driver process gone"
        assert json.loads(run.state.read_text())["state"] == "running"  # the file is left as it was
    finally:
        proc.kill()
        proc.wait()


def test_only_a_sure_death_counts(tmp_path):
    run = RunDir(tmp_path)
    set_state(run, "running")
    assert get_state(run)["state"] == "running"  # this process: alive
    record = json.loads(run.state.read_text())
    elsewhere = {**record, "driver": {**record["driver"], "host": "another-node"}}
    run.state.write_text(json.dumps(elsewhere))
    assert get_state(run)["state"] == "running"  # another host's process cannot be checked from here
    reused = {**record, "driver": {**record["driver"], "created": record["driver"]["created"] - 3600}}
    run.state.write_text(json.dumps(reused))
    assert get_state(run)["state"] == "interrupted"  # same pid, another process: the driver is gone
    set_state(run, "finished")
    run.state.write_text(json.dumps({**json.loads(run.state.read_text()), "driver": reused["driver"]}))
    assert get_state(run)["state"] == "finished"  # only active states are checked
