"""Shared fixtures: one real local Ray for the whole session, a private data cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO.parent / "shared" / "data" / "mini-imagenet-sample"  # real photographs, never in the repo


@pytest.fixture(scope="session")
def sample() -> Path:
    """The shared real mini-ImageNet sample (100 classes x 100 JPEGs), or a skip saying why not."""
    if not SAMPLE.is_dir():
        pytest.skip(f"the real mini-ImageNet sample is not at {SAMPLE} (../shared/data beside the repository)")
    return SAMPLE


@pytest.fixture(scope="session")
def sample_packed(sample: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample, packed once per test session at 84x84 (a few seconds)."""
    from cnn_cluster.data.miniimagenet import prepare

    path, _ = prepare(sample, tmp_path_factory.mktemp("sample") / "packed", 84)
    return path


@pytest.fixture(scope="session", autouse=True)
def _cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic datasets are generated into a per-session cache, never ~/.cache."""
    path = tmp_path_factory.mktemp("cnnc-cache")
    os.environ["CNNC_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def ray_local():
    """A real embedded Ray (2 CPUs, no dashboard), shared by every test that needs one."""
    import ray

    from cnn_cluster.cluster import ensure_ray

    info = ensure_ray(num_cpus=2, dashboard=False, object_store_mb=512)
    yield info
    ray.shutdown()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory):
    """One real MLflow tracking server for the session (tests that kill one start their own)."""
    from mlflow_server import MlflowServer

    server = MlflowServer(tmp_path_factory.mktemp("mlflow")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def chromium():
    """Debian's chromium and chromedriver, installed here when missing (root with apt)."""
    import apt_install as apt
    from browser import CHROMIUM, DRIVER

    if not (Path(CHROMIUM).exists() and Path(DRIVER).exists()):
        if why := apt.missing_reason(["chromium", "chromium-driver"]):
            pytest.skip(why)
        apt.install(["chromium", "chromium-driver"])
    return CHROMIUM
