"""slurm/ray-cluster.sbatch on a real SLURM (munge, slurmctld, slurmd on localhost)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cnn_cluster.run.paths import RunDir
from cnn_cluster.run.state import get_state
from cnn_cluster.run.io import read_table

from raycluster import processes_using
from slurm_local import LocalSlurm, unavailable
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


def _config(tmp_path: Path, epochs: int) -> Path:
    cfg = tiny_config(tmp_path, name="slurm", train={"epochs": epochs},
                      experiments=[{"name": "a", "conv_filters": [4], "fc_layers": [8]}])
    return write_config(tmp_path / "tiny.yaml", cfg)


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "SLURM_"))}
    return {**env, "CNNC_VENV": str(Path(sys.executable).parent.parent)}


def _job_processes(job: str) -> list[int]:
    return processes_using(Path(f"/tmp/cnnc-ray-{job}"))


def test_sbatch_runs_a_sweep(slurm, tmp_path):
    cfg = _config(tmp_path, epochs=1)
    r = subprocess.run(["sbatch", "--wait", "--parsable", f"--chdir={tmp_path}", str(SCRIPT), str(cfg),
                        "--set", "train.lr=0.002"],
                       capture_output=True, text=True, env=_env(), timeout=400)
    job = r.stdout.strip().split(";")[0]
    log = (tmp_path / f"cnnc-{job}.out").read_text() if job else ""
    assert r.returncode == 0, f"{r.stderr}\n{log}"
    assert "1 node(s) joined" in log and "ssh -N -L 8265:127.0.0.1:" in log
    run = next((tmp_path / "runs").glob("slurm-*"))
    assert get_state(RunDir(run))["state"] == "finished"
    trials = read_table(run / "trials.parquet")
    assert [t["status"] for t in trials] == ["finished"] and trials[0]["lr"] == pytest.approx(0.002)
    assert (tmp_path / ".cnnc-jobs" / job / "ray-head.log").is_file()
    assert not (tmp_path / ".cnnc-jobs" / job / "auth_token").exists()  # removed with the cluster
    assert not _job_processes(job)  # the job stopped its Ray cluster


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
