"""slurm/ray-cluster.sbatch on a real SLURM (munge, slurmctld, slurmd on localhost): a sweep, a cancel,
and a job that SLURM or the script itself requeues (a requeue, a preemption, a time limit)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from cnn_cluster.run.paths import RunDir
from cnn_cluster.run.state import get_state
from cnn_cluster.run.io import read_table

from raycluster import processes_using
from slurm_local import LocalSlurm, job_fields as _job, unavailable, until
from tiny import tiny_config, write_config

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "slurm" / "ray-cluster.sbatch"
pytestmark = [pytest.mark.slurm, pytest.mark.slow]


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    why = unavailable()
    if why:
        pytest.skip(why)
    s = LocalSlurm(tmp_path_factory.mktemp("slurm-daemons"))
    yield s
    s.stop()


def _config(tmp_path: Path, epochs: int, **sections) -> Path:
    cfg = tiny_config(tmp_path, name="slurm", train={"epochs": epochs},
                      experiments=[{"name": "a", "conv_filters": [4], "fc_layers": [8]}], **sections)
    return write_config(tmp_path / "tiny.yaml", cfg)


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "SLURM_"))}
    return {**env, "CNNC_VENV": str(Path(sys.executable).parent.parent)}


def _job_processes(job: str) -> list[int]:
    return processes_using(Path(f"/tmp/cnnc-ray-{job}"))


def test_scancel_leaves_no_ray_process(slurm, tmp_path):
    cfg = _config(tmp_path, epochs=200)
    r = subprocess.run(["sbatch", "--parsable", f"--chdir={tmp_path}", str(SCRIPT), str(cfg)],
                       capture_output=True, text=True, env=_env(), check=True)
    job = r.stdout.strip().split(";")[0]
    out = tmp_path / f"cnnc-{job}.out"
    end = time.time() + 240
    while time.time() < end and "a: started" not in (out.read_text() if out.exists() else ""):
        time.sleep(1)
    assert _job_processes(job), f"no Ray process of job {job} while it trains:\n{out.read_text()}"
    token = tmp_path / ".cnnc-jobs" / job / "auth_token"
    assert token.stat().st_mode & 0o077 == 0  # the per-job token: readable by the user only
    neighbour = _neighbour(Path(f"/tmp/cnnc-ray-{job}7k"))  # a dir the job's own is a prefix of
    try:
        subprocess.run(["scancel", job], check=True)
        end = time.time() + 60
        while time.time() < end and (_job_processes(job) or _in_queue(job)):
            time.sleep(1)
        assert not _in_queue(job)
        assert not _job_processes(job), out.read_text()
        assert neighbour.poll() is None, "the job's clean-up killed a process of another Ray's temp dir"
    finally:
        neighbour.kill()
        neighbour.wait()
        shutil.rmtree(Path(f"/tmp/cnnc-ray-{job}7k"), ignore_errors=True)
    assert "stopping the processes this job started" in out.read_text()
    run = next((tmp_path / "runs").glob("slurm-*"))
    # Recorded by the driver's handler, or (when Ray's node going down took the driver first)
    # read from its process being gone: either way not 'running' forever.
    assert get_state(RunDir(run))["state"] == "interrupted", out.read_text()


def _neighbour(temp: Path) -> subprocess.Popen:
    """A process of another Ray on the node (the suite's embedded one is /tmp/cnnc-ray-<random>):
    it names its temp dir on its command line and holds a file open inside it, as Ray's do."""
    code = ("import sys, time; from pathlib import Path; p = Path(sys.argv[1]); p.mkdir(exist_ok=True); "
            "f = open(p / 'raylet.out', 'w'); print('ready', flush=True); time.sleep(600)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(temp), f"--temp-dir={temp}"],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def _in_queue(job: str) -> bool:
    r = subprocess.run(["squeue", "-h", "-j", job], capture_output=True, text=True)
    return bool(r.stdout.strip())


# ----------------------------------------------------------------------------- requeue


def _submit(tmp_path: Path, *args: str, opts: tuple[str, ...] = (), env: dict | None = None) -> str:
    r = subprocess.run(["sbatch", "--parsable", f"--chdir={tmp_path}", *opts, str(SCRIPT), *args],
                       capture_output=True, text=True, env={**_env(), **(env or {})}, check=True)
    return r.stdout.strip().split(";")[0]


def _start_log(log: Path, start: int) -> str:
    """The job log from the start-th start on (every start appends to the one log)."""
    text = log.read_text() if log.exists() else ""
    marker = f", start {start} on "
    return text[text.index(marker):] if marker in text else ""


def _done(job: str) -> bool:
    return _job(job).get("JobState") in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT")


def test_requeue_preemption_and_time_limits_resume_one_run(slurm, tmp_path):
    """One sweep, one job with a 2-minute limit: requeued by scontrol mid-trial, then preempted by a
    job of a higher partition, then requeued by itself before its time limit, until it finishes. One
    run folder, every epoch once, and the test accuracy of the same sweep run without a break."""
    epochs = 150  # ~75 s of training: more than one start gets before its limit
    cfg = _config(tmp_path, epochs=epochs)
    plain = tmp_path / "plain"  # the same sweep uninterrupted, beside the job (it waits on SLURM mostly)
    plain.mkdir()
    ref = subprocess.Popen([str(Path(sys.executable).with_name("cnnc")), "submit", str(cfg), "--no-report",
                            "--num-cpus", "1", "--set", "train.lr=0.002", "--set", f"output.root={plain}"],
                           cwd=plain, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        job = _submit(tmp_path, str(cfg), "--set", "train.lr=0.002", opts=("--time=2", "--signal=B:USR1@30"),
                      env={"CNNC_MAX_RESTARTS": "10"})
        log = tmp_path / f"cnnc-{job}.out"
        until(lambda: "a: epoch 2/" in _start_log(log, 1), job, log, 240)
        subprocess.run(["scontrol", "requeue", job], check=True)  # an admin's requeue, mid-trial
        until(lambda: "a: epoch" in _start_log(log, 2), job, log, 240)
        urgent = subprocess.run(["sbatch", "--parsable", "--partition=urgent", "--exclusive", f"--chdir={tmp_path}",
                                 "--output=urgent.out", "--wrap", "sleep 5"],
                                capture_output=True, text=True, check=True).stdout.strip()
        until(lambda: _job(urgent).get("JobState") == "COMPLETED", job, log, 180)
        until(lambda: _done(job), job, log, 600)
        out, _ = ref.communicate(timeout=300)
    finally:
        ref.kill()
    text = log.read_text()
    assert _job(job)["JobState"] == "COMPLETED", text
    assert "1 node(s) joined" in text and "ssh -N -L 8265:127.0.0.1:" in text
    assert "time limit near: requeueing job" in text  # the script requeued itself at least once
    restarts = int(_job(job)["Restarts"])
    assert restarts >= 3, text  # the requeue, the preemption, at least one time limit
    assert f"start {restarts + 1} on" in text and "resuming run" in text
    runs = list((tmp_path / "runs").glob("slurm-*"))
    assert len(runs) == 1, runs  # a requeued job never starts a second run folder
    run = RunDir(runs[0])
    state = get_state(run)
    assert state["state"] == "finished"
    assert [s["start"] for s in state["slurm_starts"]] == list(range(1, restarts + 2))
    assert {s["job"] for s in state["slurm_starts"]} == {job}
    epochs_seen = [(e["trial"], e["epoch"]) for e in read_table(run.epochs)]
    assert epochs_seen == [("a", e) for e in range(1, epochs + 1)]  # none lost, none trained twice
    plain_run = next(plain.glob("slurm-*"))
    assert ref.returncode == 0, out
    trial = read_table(run.trials)[0]
    assert trial["status"] == "finished" and trial["lr"] == pytest.approx(0.002)  # the script's --set reached it
    assert trial["test_acc"] == read_table(plain_run / "trials.parquet")[0]["test_acc"]
    assert (tmp_path / ".cnnc-jobs" / job / "ray-head.log").is_file()
    assert not (tmp_path / ".cnnc-jobs" / job / "auth_token").exists()  # removed with the cluster
    assert f"job {job}: {restarts + 1} start(s) ({restarts} requeued" in (run.root / "report" / "index.html").read_text()
    assert not _job_processes(job)


def test_a_failed_run_is_not_resumed_and_the_cap_ends_a_job(slurm, tmp_path):
    """A trial that fails more often than max_failures fails the run: the job ends and is not
    requeued. Requeued by hand, its next start ends at once (nothing to resume); the start after the
    cap (CNNC_MAX_RESTARTS) ends before anything starts, and says how to resume by hand."""
    cfg = _config(tmp_path, epochs=200, resources={"max_failures": 0})
    job = _submit(tmp_path, str(cfg), env={"CNNC_MAX_RESTARTS": "1"})
    log = tmp_path / f"cnnc-{job}.out"
    until(lambda: "a: epoch 1/" in _start_log(log, 1), job, log, 240)
    worker = next(p for p in _job_processes(job) if "RayTrainWorker" in " ".join(psutil.Process(p).cmdline()))
    os.kill(worker, signal.SIGKILL)  # the trial fails; max_failures 0 lets Ray Train try no more
    until(lambda: _done(job), job, log, 180)
    assert _job(job)["JobState"] == "FAILED" and _job(job)["Restarts"] == "0", log.read_text()
    run = RunDir(next((tmp_path / "runs").glob("slurm-*")))
    assert get_state(run)["state"] == "failed"

    subprocess.run(["scontrol", "requeue", job], check=True)  # start 2: the run failed, nothing to do
    until(lambda: _done(job) and _job(job)["Restarts"] == "1", job, log, 240)
    second = _start_log(log, 2)
    assert "failed for its own reasons" in second and "joined" not in second, second  # no Ray started
    assert _job(job)["ExitCode"].startswith("1:")

    subprocess.run(["scontrol", "requeue", job], check=True)  # start 3: over the cap
    until(lambda: _done(job) and _job(job)["Restarts"] == "2", job, log, 240)
    third = _start_log(log, 3)
    assert "over CNNC_MAX_RESTARTS=1" in third and f"--resume {run.root.resolve()}" in third, third
    assert _job(job)["ExitCode"].startswith("3:")
    assert get_state(run)["state"] == "failed" and len(get_state(run)["slurm_starts"]) == 1
    assert not _job_processes(job)
