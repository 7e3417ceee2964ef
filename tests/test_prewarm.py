"""Prestarted Ray workers come with the trial driver's imports done, and a trial driver takes one."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from cnn_cluster.prewarm import prestarted


@pytest.mark.parametrize("job, expected", [("ffffffff", True), ("01000000", False), ("", False), (None, False)])
def test_only_workers_without_a_job_count_as_prestarted(monkeypatch, job, expected):
    if job is None:
        monkeypatch.delenv("RAY_JOB_ID", raising=False)
    else:
        monkeypatch.setenv("RAY_JOB_ID", job)
    assert prestarted() is expected


@pytest.mark.slow
def test_workers_started_for_an_actor_stay_light(ray_local):
    """A worker Ray starts for a given actor (here one with a runtime env, which no prestarted
    worker matches) imports nothing for the warm-up: Ray Train's sync actors never need torch."""
    import ray

    @ray.remote(num_cpus=0, runtime_env={"env_vars": {"CNNC_PROBE": "1"}})
    class Probe:
        def modules(self) -> dict:
            import os

            return {"torch": "torch" in sys.modules, "job": os.environ["RAY_JOB_ID"]}

    probe = Probe.remote()
    try:
        seen = ray.get(probe.modules.remote())
    finally:
        ray.kill(probe)
    assert seen["torch"] is False and seen["job"].strip("f"), seen


# A fresh embedded cluster in its own process: the shared test cluster's prestarted workers are
# taken by whichever test asks first.
_SWEEP = textwrap.dedent("""
    import glob, json, os, sys
    import ray
    from cnn_cluster.cluster import ensure_ray
    from cnn_cluster.config import validate
    from cnn_cluster.submit import submit
    sys.path.insert(0, sys.argv[2])
    from conftest import tiny_config
    from pathlib import Path

    ensure_ray(num_cpus=2)
    cfg = tiny_config(Path(sys.argv[1]))
    cfg["experiments"] = cfg["experiments"][:1]
    out = submit(validate(cfg), out=open(os.devnull, "w"))
    pid = json.loads((out.run.tune / "a" / "result.json").read_text().splitlines()[0])["pid"]
    logs = ray._private.worker._global_node.get_logs_dir_path()
    found = glob.glob(f"{logs}/worker-*-{pid}.err")
    print(json.dumps({"pid": pid, "logs": [(os.path.basename(f), open(f).read()) for f in found]}))
""")


@pytest.mark.slow
def test_first_trial_driver_runs_in_a_prewarmed_worker(tmp_path):
    """The trial driver is one of the workers Ray prestarted (nil job id in its log's name) and
    found torch, Ray Train and cnn_cluster imported: on 2 cores the first trial starts ~2 s sooner."""
    from conftest import REPO

    done = subprocess.run([sys.executable, "-c", _SWEEP, str(tmp_path), str(REPO / "tests")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(seen["logs"]) == 1, seen
    name, text = seen["logs"][0]
    assert "-ffffffff-" in name, name
    assert "cnnc prewarm: imported torch, Ray Train and cnn_cluster" in text, text[-2000:]
