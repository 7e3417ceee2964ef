"""What a killed training worker costs: a 6-experiment tiny sweep, undisturbed and with a worker killed in every trial.

Both runs are real ``cnnc submit`` processes on an embedded 2-CPU Ray, one after the other.
In the disturbed run, each trial's Ray Train worker is killed (SIGKILL, by the PID its first
epoch report carries) right after that report; the trial restarts from its checkpoint.
Prints ``name: value`` lines:

- ``resume_overhead_ratio``: disturbed wall time / undisturbed wall time (goal <= 1.5);
- ``lost_epochs``: epochs reported twice, i.e. trained again beyond the one-epoch checkpoint
  interval (goal 0).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from tiny import tiny_config  # noqa: E402  (the suite's tiny sweep)

from cnn_cluster.run.reports import EpochReport, parse  # noqa: E402

CNNC = str(Path(sys.executable).with_name("cnnc"))
EPOCHS = 4
CONFIG = tiny_config(
    name="resilience", data={"synthetic": {"classes": 4, "images_per_class": 120}}, train={"epochs": EPOCHS},
    experiments=[{"name": f"e{i}", "conv_filters": [8, 16], "fc_layers": [16 * (1 + i % 3)]} for i in range(6)],
    resources={"max_failures": 2})


def _reports(run: Path) -> dict[str, list[dict]]:
    """Every epoch report Tune recorded, per trial (result.json is flushed on each report)."""
    out = {}
    for f in (run / "tune").glob("*/result.json"):
        rows = []
        for line in f.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a line being written
                continue
        out[f.parent.name] = [r for r in rows if isinstance(parse(r), EpochReport)]
    return out


def _killer(root: Path, stop: threading.Event, killed: dict[str, int]) -> None:
    """Kill each trial's worker once, right after its first epoch report."""
    while not stop.is_set():
        for run in root.glob("resilience-*"):
            for trial, rows in _reports(run).items():
                if rows and trial not in killed:
                    pid = int(rows[-1]["worker_pid"])  # the training worker (Tune's "pid" is the driver's)
                    try:
                        worker = psutil.Process(pid)
                        if "RayTrainWorker" not in " ".join(worker.cmdline()):
                            raise psutil.NoSuchProcess(pid)  # never anything but a training worker
                        worker.kill()
                        killed[trial] = pid
                    except psutil.Error:
                        killed[trial] = -1
        time.sleep(0.2)


def sweep(root: Path, disturb: bool) -> tuple[float, Path, dict]:
    root.mkdir(parents=True)
    cfg = root / "sweep.yaml"
    cfg.write_text(yaml.safe_dump({**CONFIG, "output": {"root": str(root / "runs")}}))
    killed: dict[str, int] = {}
    stop = threading.Event()
    thread = threading.Thread(target=_killer, args=(root / "runs", stop, killed), daemon=True)
    t0 = time.time()
    proc = subprocess.Popen([CNNC, "submit", str(cfg), "--no-dashboard", "--no-report", "--num-cpus", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    if disturb:
        thread.start()
    out, _ = proc.communicate()
    wall = time.time() - t0
    stop.set()
    if proc.returncode != 0:
        raise SystemExit(f"sweep failed ({proc.returncode}):\n{out}")
    return wall, (root / "runs" / "latest").resolve(), killed


def main() -> None:
    os.environ.setdefault("CNNC_CACHE", str(Path(tempfile.gettempdir()) / "cnnc-bench-cache"))
    with tempfile.TemporaryDirectory() as tmp:
        _warm(Path(tmp) / "warm")
        calm_wall, calm_run, _ = sweep(Path(tmp) / "calm", disturb=False)
        hit_wall, hit_run, killed = sweep(Path(tmp) / "hit", disturb=True)
        lost = sum(len(rows) - len({r["epoch"] for r in rows}) for rows in _reports(hit_run).values())
        print(f"trials: {len(CONFIG['experiments'])} x {EPOCHS} epochs, 2 CPUs, 1 worker each, 2 at a time")
        print(f"workers_killed: {sum(pid > 0 for pid in killed.values())}")
        print(f"undisturbed_wall_s: {calm_wall:.1f}")
        print(f"disturbed_wall_s: {hit_wall:.1f}")
        print(f"resume_overhead_ratio: {hit_wall / calm_wall:.2f}")
        print(f"lost_epochs: {lost}")
        print(f"epoch_tables_equal: {int(_epochs(hit_run) == _epochs(calm_run))}")


def _epochs(run: Path) -> list[tuple[str, int]]:
    import pyarrow.parquet as pq

    return sorted((e["trial"], e["epoch"]) for e in pq.read_table(run / "epochs.parquet").to_pylist())


def _warm(root: Path) -> None:
    """One tiny run first, so neither timed run pays for generating the data or cold imports."""
    root.mkdir()
    cfg = {**CONFIG, "experiments": CONFIG["experiments"][:1], "train": {**CONFIG["train"], "epochs": 1},
           "output": {"root": str(root / "runs")}}
    (root / "sweep.yaml").write_text(yaml.safe_dump(cfg))
    subprocess.run([CNNC, "submit", str(root / "sweep.yaml"), "--no-dashboard", "--no-report", "--num-cpus", "2"],
                   capture_output=True, check=True)


if __name__ == "__main__":
    main()
