"""What a requeued SLURM start does with its job's run folder (cnn_cluster.run.slurm_job), against real
run folders and real driver processes, through the command the batch script calls (cnnc slurm). The script on a
real SLURM: tests/test_slurm.py."""

import os
import signal
import subprocess
import sys
from pathlib import Path

from cnn_cluster.run.io import read_json
from cnn_cluster.run.paths import RunDir
from cnn_cluster.run.state import set_state

from test_state import _driver


CNNC = str(Path(sys.executable).with_name("cnnc"))


def _job(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CNNC, "slurm", *args], capture_output=True, text=True, timeout=60)


def _run(folder: Path, state: str) -> RunDir:
    run = RunDir(folder)
    folder.mkdir(parents=True)
    run.config.write_text("name: x\n")
    set_state(run, state)
    return run


def _recorded(tmp_path: Path, run: RunDir) -> Path:
    run_file = tmp_path / "job" / "run"
    run_file.parent.mkdir(exist_ok=True)
    run_file.write_text(f"{run.root}\n")
    return run_file


def test_a_later_start_resumes_an_interrupted_run_and_ends_a_finished_or_failed_one(tmp_path):
    for state, action, why in [("interrupted", "resume {}", "resuming run {}"),
                               ("finished", "exit 0", "is finished: nothing to resume"),
                               ("failed", "exit 1", "failed for its own reasons")]:
        run = _run(tmp_path / state, state)
        r = _job("start", str(_recorded(tmp_path, run)))
        assert r.returncode == 0 and r.stdout.strip() == action.format(run.root), r.stdout + r.stderr
        assert why.format(run.root) in r.stderr


def test_a_start_with_nothing_recorded_or_a_folder_never_made_starts_anew(tmp_path):
    run_file = tmp_path / "job" / "run"
    assert _job("start", str(run_file)).stdout.strip() == "fresh"  # the first start died before a run
    run_file.parent.mkdir()
    run_file.write_text(f"{tmp_path / 'never-made'}\n")  # named, then killed before the folder existed
    r = _job("start", str(run_file))
    assert r.stdout.strip() == "fresh" and "starting the sweep anew" in r.stderr


def test_settle_records_a_driver_that_died_without_saying_so(tmp_path):
    """Ray going down can take the driver before its handler runs: run.json still says running.
    The settle, on the driver's host, waits for the driver to be gone and records 'interrupted'."""
    run = RunDir(tmp_path / "run")
    run.root.mkdir()
    run.config.write_text("name: x\n")
    driver = _driver(run)
    settler = subprocess.Popen([CNNC, "slurm", "settle",
                                str(_recorded(tmp_path, run)), "--after", str(driver.pid)],
                               stdout=subprocess.PIPE, text=True)
    try:
        assert read_json(run.state)["state"] == "running"
        os.kill(driver.pid, signal.SIGKILL)  # no handler runs
        driver.wait(10)
        out, _ = settler.communicate(timeout=60)
    finally:
        driver.kill()
        settler.kill()
    assert out.strip() == "interrupted"
    assert read_json(run.state)["state"] == "interrupted"  # on disk, for readers on any host


def test_settle_leaves_a_recorded_state_alone_and_says_none_without_a_run(tmp_path):
    run = _run(tmp_path / "run", "finished")
    before = run.state.read_text()
    assert _job("settle", str(_recorded(tmp_path, run))).stdout.strip() == "finished"
    assert run.state.read_text() == before
    assert _job("settle", str(tmp_path / "nothing")).stdout.strip() == "none"
    bad = _job("settle")
    assert bad.returncode == 2 and "Usage: cnnc slurm settle" in bad.stderr
