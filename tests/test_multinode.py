"""slurm/ray-cluster.sbatch on a real SLURM of two nodes, each its own network namespace
(tests/slurm_netns.py): one trial's DDP ranks on two hosts with different addresses."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from cnn_cluster.run.paths import RunDir
from cnn_cluster.run.state import get_state
from cnn_cluster.run.io import read_table

from slurm_local import job_fields, until
from slurm_netns import PRIVATE_TMP, NetnsSlurm, unavailable
from tiny import tiny_config, write_config

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "slurm" / "ray-cluster.sbatch"
CNNC = str(Path(sys.executable).with_name("cnnc"))
pytestmark = [pytest.mark.multinode, pytest.mark.slurm, pytest.mark.slow]


@pytest.fixture(scope="module")
def cluster():
    why = unavailable()
    if why:
        pytest.skip(why)
    # Outside /tmp: each node has its own /tmp, and the run folder must be on the shared disk.
    work = Path(tempfile.mkdtemp(prefix="cnnc-multinode-", dir="/var/tmp"))
    work.chmod(0o755)  # slurmctld runs as the slurm user
    try:
        with NetnsSlurm(work / "cluster", nodes=2) as c:
            yield c
    finally:
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture
def shared(cluster):
    """A folder on the disk every node shares (this test's tmp_path lies in the host's /tmp)."""
    path = Path(tempfile.mkdtemp(prefix="job-", dir=cluster.work.parent))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _config(folder: Path, epochs: int, images_per_class: int = 24) -> Path:
    cfg = tiny_config(folder, name="mn", train={"epochs": epochs},
                      data={"image_size": 32, "synthetic": {"classes": 4, "images_per_class": images_per_class}},
                      experiments=[{"name": "a", "conv_filters": [4], "fc_layers": [8]},
                                   {"name": "b", "conv_filters": [8], "fc_layers": [], "max_pool": False, "stride": 2}],
                      resources={"workers_per_trial": 2})  # one rank on each 1-CPU node
    return write_config(folder / "mn.yaml", cfg)


def _env(folder: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "SLURM_"))}
    return {**env, "CNNC_VENV": str(Path(sys.executable).parent.parent), "CNNC_CACHE": str(folder / "cache")}


def _nothing_left(cluster: NetnsSlurm, nodes: list[str] | None = None) -> None:
    """No process but its slurmd in any node, no Ray temp folder in any node's /tmp."""
    nodes = nodes or cluster.names
    end = time.time() + 60
    while time.time() < end and any(cluster.node_pids(n) != [cluster.slurmd_pid(n)] for n in nodes):
        time.sleep(1)
    for node in nodes:
        assert cluster.node_pids(node) == [cluster.slurmd_pid(node)], (node, _commands(cluster.node_pids(node)))
        left = cluster.in_node(node, ["ls", PRIVATE_TMP]).stdout.split()  # what the node wrote to its /tmp
        assert not [f for f in left if f.startswith("cnnc-ray-")], (node, left)


def _commands(pids: list[int]) -> list[str]:
    out = []
    for pid in pids:
        try:
            out.append(Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")[:80])
        except OSError:
            pass
    return out


def _wait_log(log: Path, needle: str, timeout: float = 300) -> str:
    end = time.time() + timeout
    while time.time() < end:
        text = log.read_text() if log.exists() else ""
        if needle in text:
            return text
        time.sleep(1)
    raise AssertionError(f"never saw {needle!r} in {log}:\n{log.read_text() if log.exists() else ''}")


def _sbatch(cluster: NetnsSlurm, shared: Path, *args: str, wait: bool = False) -> str:
    r = cluster.run(["sbatch", "--parsable", "--nodes=2", f"--chdir={shared}", *(["--wait"] if wait else []),
                     str(SCRIPT), *args], env=_env(shared), timeout=500)
    job = r.stdout.strip().split(";")[0]
    log = shared / f"cnnc-{job}.out"
    assert r.returncode == 0 and job, f"{r.stderr}\n{log.read_text() if log.exists() else ''}"
    return job


def _gone(cluster: NetnsSlurm, job: str, timeout: float = 180) -> None:
    end = time.time() + timeout
    while time.time() < end and cluster.run(["squeue", "-h", "-j", job]).stdout.strip():
        time.sleep(1)
    assert not cluster.run(["squeue", "-h", "-j", job]).stdout.strip(), f"job {job} still queued"


def test_two_nodes_scancel_a_lost_node_and_resume(cluster, shared):
    """One sweep through two jobs: cancelled in its first epoch (a cancel is not requeued), resumed by
    hand; its second node lost mid-sweep, the job requeued by SLURM and resumed by itself to the end
    once the node is back. Each time nothing may be left on any node, and at the end every epoch is
    there once and every trial's two ranks ran on the two hosts."""
    cfg = _config(shared, epochs=3, images_per_class=300)  # epochs long enough to stop inside one
    job = _sbatch(cluster, shared, str(cfg))
    log = shared / f"cnnc-{job}.out"
    text = _wait_log(log, "a: epoch 1/3")
    assert "2 node(s) joined" in text
    assert all(len(cluster.node_pids(n)) > 1 for n in cluster.names)  # Ray runs on both nodes
    assert cluster.run(["scancel", job]).returncode == 0
    _gone(cluster, job)
    _nothing_left(cluster)
    run = RunDir(next((shared / "runs").glob("mn-*")))
    assert get_state(run)["state"] == "interrupted", log.read_text()

    job = _sbatch(cluster, shared, "--resume", str(run.root))
    log = shared / f"cnnc-{job}.out"
    _wait_log(log, "b: epoch 1/3")
    cluster.kill_node("cnnc-n2")  # its slurmd, raylet and training worker, at once
    # SLURM ends the job on the node left and requeues it (--requeue); it waits for its two nodes.
    until(lambda: job_fields(job, cluster.env).get("JobState") == "PENDING"
          and job_fields(job, cluster.env).get("Restarts") == "1", job, log, 300, cluster.env, nudge=False)
    assert get_state(run)["state"] == "interrupted", log.read_text()
    _nothing_left(cluster, ["cnnc-n1"])
    cluster.restart_node("cnnc-n2")
    # Its second start resumes the run by itself, to the end.
    until(lambda: job_fields(job, cluster.env).get("JobState") == "COMPLETED", job, log, 300, cluster.env)
    text = log.read_text()
    assert get_state(run)["state"] == "finished", text
    assert f"job {job}, start 2 on cnnc-n1" in text and f"resuming run {run.root}" in text
    trials = read_table(run.trials)
    assert [t["status"] for t in trials] == ["finished", "finished"]
    for t in trials:  # the ranks of one trial ran on both hosts, each at its own address
        assert sorted(t["rank_nodes"]) == ["cnnc-n1", "cnnc-n2"], t["rank_nodes"]
        assert len(set(t["rank_node_ids"])) == 2
    epochs = read_table(run.epochs)  # no finished epoch lost, none trained twice
    assert [(e["trial"], e["epoch"]) for e in epochs] == [(t, e) for t in "ab" for e in (1, 2, 3)]
    _nothing_left(cluster)


def _cnnc(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "SLURM_"))}
    return subprocess.run([CNNC, *args], capture_output=True, text=True, env=env, timeout=timeout)


def test_jobs_api_from_outside_reaches_the_head_by_its_address(cluster, shared):
    """sbatch --serve with the dashboard on the head's address: from the host (not a node),
    cnnc submit --address reaches it with the job's token (without it: refused), cnnc logs
    --follow streams the sweep, cnnc stop interrupts it."""
    env = {**_env(shared), "CNNC_DASHBOARD_HOST": "head"}
    r = cluster.run(["sbatch", "--parsable", "--nodes=2", f"--chdir={shared}", str(SCRIPT), "--serve"], env=env,
                    timeout=60)
    job = r.stdout.strip().split(";")[0]
    assert r.returncode == 0 and job, r.stderr
    text = _wait_log(shared / f"cnnc-{job}.out", "serving; end it with scancel")
    url = re.search(r"Jobs API: (http://[\d.]+:\d+)", text).group(1)
    assert url.startswith(f"http://{cluster.addrs['cnnc-n1']}:")  # the head's own address, not loopback
    token = shared / ".cnnc-jobs" / job / "auth_token"
    with pytest.raises(urllib.error.HTTPError) as err:  # no token: refused
        urllib.request.urlopen(f"{url}/api/jobs/", timeout=10)
    assert err.value.code == 401
    cfg = _config(shared, epochs=50)
    r = _cnnc("submit", str(cfg), "--address", url, "--token-file", str(token))
    assert r.returncode == 0, r.stdout + r.stderr
    ray_job = re.search(r"submitted job (\S+)", r.stdout).group(1)
    run = Path(re.search(r"results will land in (\S+)", r.stdout).group(1))
    follow = subprocess.Popen([CNNC, "logs", ray_job, "--follow", "--address", url, "--token-file", str(token)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        seen = []
        for line in follow.stdout:  # lines arrive while the sweep trains
            seen.append(line)
            if "a: epoch 2/50" in line:
                break
        assert any("a: epoch 2/50" in line for line in seen), "".join(seen)
        stop = _cnnc("stop", ray_job, "--address", url, "--token-file", str(token))
        assert "stop requested" in stop.stdout, stop.stdout + stop.stderr
        follow.wait(120)
    finally:
        follow.kill()
    end = time.time() + 60
    while time.time() < end and "STOPPED" not in (st := _cnnc("status", ray_job, "--address", url, "--token-file",
                                                             str(token)).stdout):
        time.sleep(1)
    assert f"{ray_job}: STOPPED" in st
    end = time.time() + 30
    while time.time() < end and get_state(RunDir(run)).get("state") != "interrupted":
        time.sleep(1)
    assert get_state(RunDir(run))["state"] == "interrupted"
    assert cluster.run(["scancel", job]).returncode == 0
    _gone(cluster, job)
    _nothing_left(cluster)
