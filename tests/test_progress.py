"""Progress inside long epochs: real sweeps whose epochs outlast the interval, piped and on a terminal."""

import json
import os
import pty
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from cnn_cluster.sweep.progress import Progress, TrialPlan
from cnn_cluster.run.paths import RunDir
from tiny import tiny_config

CNNC = str(Path(sys.executable).with_name("cnnc"))
BATCH_LINE = re.compile(r"a: epoch (\d)/2 batch (\d+)/(\d+)  loss [\d.]+  \d+ img/s  ETA trial \S+, sweep \S+")


def test_live_line_and_etas_from_a_live_file(tmp_path):
    run = RunDir(tmp_path)
    p = Progress({"a": TrialPlan(epochs=10, flops=100), "b": TrialPlan(epochs=2, flops=200)}, run,
                 concurrent=1, train_images=1000)
    p.state["a"] = "running"
    run.live_dir.mkdir()
    run.live("a").write_text(json.dumps({"epoch": 3, "epochs": 10, "batch": 120, "batches": 347, "loss": 3.12,
                                         "images_per_s": 200.0, "epoch_seconds": 60.0, "time": time.time()}))
    p._read_live()
    # a: (7 epochs x 347 + 227 batches) x 0.5 s; b pending: 2 epochs x 1000 images at a's s/(image.FLOP) x 2
    assert p._trial_eta("a") == pytest.approx((7 * 347 + 227) * 0.5)
    assert p.sweep_eta() == pytest.approx((7 * 347 + 227) * 0.5 + 2 * 1000 * 200 / (200.0 * 100))
    assert p.live_line("a") == "a: epoch 3/10 batch 120/347  loss 3.120  200 img/s  ETA trial 22m, sweep 22m"
    p.concurrent = 2  # two slots: b would run beside a, and the sweep still ends when a does
    assert p.sweep_eta() == pytest.approx(p._trial_eta("a"))


def _slow_epochs(tmp_path: Path) -> Path:
    """Two epochs of ~3 s or more each, in batches of 16: longer than the 1 s interval below."""
    cfg = tiny_config(tmp_path, train={"epochs": 2, "batch_size": 16},
                      data={"synthetic": {"classes": 4, "images_per_class": 300}},
                      experiments=[{"name": "a", "conv_filters": [8, 16], "fc_layers": [16]}])
    path = tmp_path / "slow.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _argv(path: Path) -> list[str]:
    return [CNNC, "submit", str(path), "--no-dashboard", "--no-report", "--num-cpus", "2"]


@pytest.mark.slow
def test_piped_output_gets_periodic_batch_lines_not_a_flood(tmp_path):
    t0 = time.time()
    r = subprocess.run(_argv(_slow_epochs(tmp_path)), capture_output=True, text=True, timeout=600,
                       env={**os.environ, "CNNC_PROGRESS_S": "1"})
    elapsed = time.time() - t0
    assert r.returncode == 0, r.stdout + r.stderr
    lines = [m for line in r.stdout.splitlines() if (m := BATCH_LINE.search(line))]
    assert lines, r.stdout
    assert {int(m.group(1)) for m in lines} <= {1, 2} and all(int(m.group(3)) == 60 for m in lines)
    assert len(lines) <= elapsed / 1.0 + 2  # at most one per interval
    assert "\x1b[" not in r.stdout  # no terminal codes in a log


@pytest.mark.slow
def test_terminal_gets_one_updating_line_per_running_trial(tmp_path):
    master, slave = pty.openpty()
    proc = subprocess.Popen(_argv(_slow_epochs(tmp_path)), stdout=slave, stderr=subprocess.DEVNULL,
                            env={**os.environ, "CNNC_PROGRESS_S": "1000"})  # a terminal needs no periodic lines
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    assert proc.wait(timeout=600) == 0
    screen = b"".join(chunks).decode(errors="replace")
    assert BATCH_LINE.search(screen), screen
    assert "\x1b[1A\x1b[2K" in screen  # the live line is erased and redrawn in place
    assert "sweep done" in screen
