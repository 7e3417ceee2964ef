"""slurm/ray-cluster.sbatch on a real SLURM of two nodes, each its own network namespace
(tests/slurm_netns.py): one trial's DDP ranks on two hosts with different addresses."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from cnn_cluster.results import RunDir, get_state, read_table

from slurm_netns import NetnsSlurm, unavailable

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "slurm" / "ray-cluster.sbatch"
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


def _config(folder: Path, epochs: int) -> Path:
    cfg = {
        "name": "mn",
        "data": {"synthetic": {"classes": 4, "images_per_class": 24}},
        "train": {"epochs": epochs, "batch_size": 16},
        "experiments": [{"name": "a", "conv_filters": [4], "fc_layers": [8]},
                        {"name": "b", "conv_filters": [8], "fc_layers": [], "max_pool": False, "stride": 2}],
        "resources": {"workers_per_trial": 2, "cpus_per_worker": 1},  # one rank on each 1-CPU node
        "output": {"root": str(folder / "runs")},
    }
    path = folder / "mn.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _env(folder: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "SLURM_"))}
    return {**env, "CNNC_VENV": str(Path(sys.executable).parent.parent), "CNNC_CACHE": str(folder / "cache")}


def test_one_trial_spans_two_nodes(cluster, shared):
    cfg = _config(shared, epochs=2)
    r = cluster.run(["sbatch", "--wait", "--parsable", "--nodes=2", f"--chdir={shared}", str(SCRIPT), str(cfg)],
                    env=_env(shared), timeout=500)
    job = r.stdout.strip().split(";")[0]
    log = (shared / f"cnnc-{job}.out").read_text() if job else ""
    assert r.returncode == 0, f"{r.stderr}\n{log}"
    assert "2 node(s) joined" in log, log
    run = next((shared / "runs").glob("mn-*"))
    assert get_state(RunDir(run))["state"] == "finished"
    trials = read_table(run / "trials.parquet")
    assert [t["status"] for t in trials] == ["finished", "finished"]
    for t in trials:  # the ranks of one trial ran on both hosts, each at its own address
        assert sorted(t["rank_nodes"]) == ["cnnc-n1", "cnnc-n2"], t["rank_nodes"]
        assert len(set(t["rank_node_ids"])) == 2
    epochs = read_table(run / "epochs.parquet")
    assert [(e["trial"], e["epoch"]) for e in epochs] == [("a", 1), ("a", 2), ("b", 1), ("b", 2)]
    for node in cluster.names:  # the job stopped everything it started on every node
        assert cluster.node_pids(node) == [cluster.slurmd_pid(node)], node
        left = cluster.in_node(node, ["ls", "/tmp"]).stdout.split()
        assert not [f for f in left if f.startswith("cnnc-ray-")], (node, left)
