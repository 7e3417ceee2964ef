"""Ray's private names, fenced in cnn_cluster/training/ray_compat.py: a Ray upgrade that moves one fails here
in seconds, and the sweep's stock-trainer path gives the same tables as the lean one."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from cnn_cluster.training import ray_compat
from conftest import REPO
from tiny import tiny_config


def test_every_private_ray_name_exists_with_the_expected_signature():
    assert ray_compat.problems() == []
    assert ray_compat.stock_reason() is None


def test_no_overridden_method_is_gone_from_its_ray_base():
    assert ray_compat.overridden_but_missing() == []


def test_the_check_catches_a_name_that_moved_or_changed(monkeypatch):
    assert ray_compat._check("ray.train.torch", "TorchTrainer.no_such_method", None).endswith("is gone")
    assert ray_compat._check("no.such.module", "X", None).endswith("is gone")
    assert "lacks parameter(s) renamed_arg" in ray_compat._check("ray.train.torch", "TorchTrainer.__init__",
                                                                  ("self", "renamed_arg"))
    moved = {**ray_compat.EXPECTED, ("ray.train.v2._internal.gone", "TrainController"): None}
    monkeypatch.setattr(ray_compat, "EXPECTED", moved)
    monkeypatch.setattr(ray_compat, "_TRAINER_PROBLEMS", None)
    assert "ray.train.v2._internal.gone.TrainController is gone" in ray_compat.stock_reason()


def test_the_environment_forces_the_stock_trainer(monkeypatch):
    monkeypatch.setenv(ray_compat.STOCK_ENV, "1")
    assert ray_compat.STOCK_ENV in ray_compat.stock_reason()
    monkeypatch.setenv(ray_compat.STOCK_ENV, "0")
    assert ray_compat.stock_reason() is None


def test_no_private_ray_name_outside_the_fence():
    """Underscore modules, attributes and keywords of Ray appear in ray_compat.py only."""
    private = re.compile(r"\b(?:ray|tune|train|tuner|worker)\.(?:[\w.]*\.)?_[a-z]\w*|_internal\b|_private\b|"
                         r"_local_tuner|_temp_dir\b")
    files = [*(REPO / "cnn_cluster").rglob("*.py"), *(REPO / "jobs").glob("*.py"), *(REPO / "bench").glob("*.py")]
    hits = [f"{f.relative_to(REPO)}:{i}: {line.strip()}" for f in files if f.name != "ray_compat.py"
            for i, line in enumerate(f.read_text().splitlines(), 1)
            if private.search(line) and not line.lstrip().startswith("#")]
    assert hits == []


@pytest.mark.slow
def test_stock_and_lean_trainer_give_equal_epoch_tables(ray_local, tmp_path):
    """The same tiny sweep on the lean trainer (in this session's Ray) and on Ray's stock TorchTrainer
    (a cnnc submit with CNNC_RAY_STOCK=1, its own Ray: stock trials start a TrainController actor,
    which the shared cluster's actor checks in test_sweep.py must not see)."""
    from cnn_cluster.config import validate
    from cnn_cluster.sweep.submit import submit

    cfg = tiny_config(tmp_path, train={"epochs": 2})
    lean = submit(validate({**cfg, "output": {"root": str(tmp_path / "lean")}}))
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({**cfg, "output": {"root": str(tmp_path / "stock")}}))
    r = subprocess.run([str(Path(sys.executable).with_name("cnnc")), "submit", str(path), "--no-dashboard",
                        "--no-report"], capture_output=True, text=True, timeout=600,
                       env={**os.environ, ray_compat.STOCK_ENV: "1"})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "stock TorchTrainer (CNNC_RAY_STOCK is set)" in r.stdout

    def table(run: Path) -> list[dict]:
        rows = pq.read_table(run / "epochs.parquet").to_pylist()
        return [{k: v for k, v in e.items() if k not in ("seconds", "images_per_s")} for e in rows]

    assert table(tmp_path / "stock" / "latest") == table(lean.run.root) and len(table(lean.run.root)) == 4
