"""The GPU path: what runs everywhere (placement, gathering, the refusal without a GPU) and,
where a CUDA device is at hand, a real sweep on it."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from cnn_cluster.config import validate
from cnn_cluster.sweep.submit import submit
from cnn_cluster.training.step import Arrays, autocast, gather, place, to_input

from catalogue import documented
from tiny import tiny_config

HAS_GPU = torch.cuda.is_available()


def _arrays(n: int = 10) -> Arrays:
    rng = np.random.default_rng(0)
    return Arrays(rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8), np.arange(n) % 3,
                  np.zeros(n, np.uint8), (0.5, 0.4, 0.3), (0.2, 0.2, 0.2), 3)


def test_gathering_from_a_placed_tensor_equals_the_host_path():
    a = _arrays()
    idx = np.array([7, 2, 5])
    host = gather(a.images, idx, torch.device("cpu"))
    placed = gather(torch.from_numpy(a.images), idx, torch.device("cpu"))
    assert torch.equal(host, placed) and host.dtype == torch.uint8
    m, s = torch.tensor(a.mean).view(1, 3, 1, 1), torch.tensor(a.std).view(1, 3, 1, 1)
    x = to_input(host, m, s)
    assert x.shape == (3, 3, 8, 8) and x.is_contiguous(memory_format=torch.channels_last)
    assert place(a, torch.device("cpu")) is a  # the CPU path leaves the arrays alone
    with autocast(torch.device("cpu")):  # no autocast on the CPU: full precision
        assert torch.nn.Linear(2, 2)(torch.ones(1, 2)).dtype == torch.float32


@pytest.mark.skipif(HAS_GPU, reason="this machine has a GPU")
def test_gpu_config_without_a_gpu_fails_before_ray_starts(tmp_path):
    cfg = tmp_path / "gpu.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config(tmp_path, resources={"gpus_per_worker": 1})))
    r = subprocess.run([sys.executable, "-m", "cnn_cluster.cli", "submit", str(cfg)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2, r.stderr
    assert r.stderr == f"error: {documented('gpu-missing')}\n"
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()  # nothing written


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason="needs a CUDA device")
def test_sweep_and_occlusion_on_a_gpu(ray_local, tmp_path):
    from cnn_cluster.run.io import read_table

    a = _arrays()
    placed = place(a, torch.device("cuda"))
    assert isinstance(placed.images, torch.Tensor) and placed.images.is_cuda
    cfg = validate(tiny_config(tmp_path, resources={"gpus_per_worker": 1},
                               occlusion={"count": 2, "window": 8, "stride": 8}))
    out = submit(cfg)
    assert out.failed == 0
    assert all(e["images_per_s"] > 0 for e in read_table(out.run.epochs))
