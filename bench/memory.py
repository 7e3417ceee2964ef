"""24 tiny experiments on a 2-CPU machine: bounded concurrency and memory, the dataset held once.

Runs a real ``cnnc submit`` (embedded Ray, 2 CPUs) of a 24-experiment grid on the built-in
dataset (6,000 images of 84x84: 127 MB) and samples, every 0.5 s, the proportional set size
(PSS: shared pages divided among the processes that map them, so the object store's copy of
the dataset counts once) of every process of the run, and the number of trials running.
Prints ``name: value`` lines.
"""

from __future__ import annotations

import os
import re
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

CNNC = str(Path(sys.executable).with_name("cnnc"))
CONFIG = tiny_config(
    name="memory", data={"synthetic": {"classes": 10, "images_per_class": 600}}, train={"batch_size": 64},
    experiments=[{"name": "base", "conv_filters": [8], "fc_layers": [16]}],
    # 4 x 3 x 2 = 24 experiments
    grid={"conv_filters": [[4], [8], [8, 16], [16, 32]], "fc_layers": [[], [16], [32]], "max_pool": [True, False]})


def _pss_kb(pid: int) -> tuple[int, int]:
    """(PSS of the process, PSS of its object-store mappings), kB."""
    try:
        text = Path(f"/proc/{pid}/smaps").read_text()
    except OSError:
        return 0, 0
    total = store = 0
    for block in re.split(r"\n(?=[0-9a-f]+-[0-9a-f]+ )", text):
        m = re.search(r"^Pss:\s+(\d+) kB", block, re.M)
        if not m:
            continue
        kb = int(m.group(1))
        total += kb
        if "plasma" in block.split("\n", 1)[0] or "/dev/shm" in block.split("\n", 1)[0]:
            store += kb
    return total, store


def _title(pid: int) -> str:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    first = cmd[0].decode(errors="replace")
    if first.startswith("ray::"):
        return first.split()[0]
    return Path(first).name if not first.endswith("python") else Path(cmd[1].decode(errors="replace")).name


def main() -> None:
    os.environ.setdefault("CNNC_CACHE", str(Path(tempfile.gettempdir()) / "cnnc-bench-cache"))
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "sweep.yaml"
        cfg.write_text(yaml.safe_dump({**CONFIG, "output": {"root": str(Path(tmp) / "runs")}}))
        subprocess.run([CNNC, "validate", str(cfg)], check=True, capture_output=True)
        peak = {"pss": 0, "procs": 0, "store": 0, "by_kind": {}}
        lines: list[str] = []
        t0 = time.time()
        proc = subprocess.Popen([CNNC, "submit", str(cfg), "--no-dashboard", "--no-report", "--num-cpus", "2"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
        reader.start()
        while proc.poll() is None:
            try:
                pids = [proc.pid] + [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
            except psutil.NoSuchProcess:  # the run just ended
                break
            sample = {p: _pss_kb(p) for p in pids}
            total = sum(t for t, _ in sample.values())
            if total > peak["pss"]:
                by_kind: dict[str, list[int]] = {}
                for p, (t, _) in sample.items():
                    by_kind.setdefault(_title(p), []).append(t)
                peak.update(pss=total, by_kind=by_kind)
            peak["store"] = max(peak["store"], sum(s for _, s in sample.values()))
            peak["procs"] = max(peak["procs"], len(pids))
            time.sleep(0.5)
        reader.join()
        wall = time.time() - t0
        running = [int(m.group(1)) for line in lines if (m := re.search(r"running (\d+)", line))]
        finished = re.findall(r"(\d+) finished, (\d+) failed", "".join(lines))
        if proc.returncode != 0:
            raise SystemExit("".join(lines[-40:]))
        print("experiments: 24 (1 epoch, 4,800 training images each), 2 CPUs, 1 worker per trial")
        print(f"trials_finished: {finished[-1][0] if finished else '?'}")
        print(f"max_trials_running: {max(running)}")
        print(f"dataset_mb: {6000 * 84 * 84 * 3 / 2**20:.0f}")
        print(f"peak_pss_mb: {peak['pss'] / 1024:.0f}")
        print(f"peak_object_store_pss_mb: {peak['store'] / 1024:.0f}")
        print(f"peak_processes: {peak['procs']}")
        for kind, kbs in sorted(peak["by_kind"].items(), key=lambda kv: -sum(kv[1])):
            print(f"at_peak {kind}: {len(kbs)} x {sum(kbs) / len(kbs) / 1024:.0f} MB")
        print(f"wall_s: {wall:.0f}")


if __name__ == "__main__":
    main()
