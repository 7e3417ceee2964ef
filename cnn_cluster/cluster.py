"""Starting or attaching to Ray, and what the cluster has to offer.

Environment defaults that cut Ray Train's fixed per-trial cost on small
machines are applied here, before any Ray process starts, so both an embedded
cluster and a cluster started by ``slurm/ray-cluster.sbatch`` inherit them.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shutil
import signal
import tempfile
import threading
from dataclasses import dataclass
from typing import Optional

from .errors import CnncError
from .training.ray_compat import TRAIN_FLAGS, init_temp_dir_kwargs

# Why each one (measured in docs/performance.md); Ray Train's own flags live in ray_compat.
RAY_ENV = {
    **TRAIN_FLAGS,
    "RAY_AIR_NEW_OUTPUT": "0",
    "TUNE_DISABLE_SIGINT_HANDLER": "1",  # Ctrl-C must stop the sweep, not end it looking finished
    "TUNE_GLOBAL_CHECKPOINT_S": "2",  # snapshot the sweep's state often: a killed driver loses <= 2 s
    "RAY_DEDUP_LOGS": "1",
}

# What this process's ray.init returned (its dashboard URL): Ray has no public getter for it later.
_CONTEXT: dict = {}


@dataclass(frozen=True)
class ClusterInfo:
    cpus: float
    gpus: float
    nodes: int
    max_node_cpus: float
    max_node_gpus: float
    dashboard_url: Optional[str]


def apply_env() -> None:
    """RAY_ENV's defaults, where the environment does not set them already."""
    for key, value in RAY_ENV.items():
        os.environ.setdefault(key, value)


def ensure_ray(num_cpus: Optional[int] = None, dashboard: bool = False, object_store_mb: Optional[int] = None,
               address: Optional[str] = None, dashboard_host: str = "127.0.0.1") -> ClusterInfo:
    """Attach to the Ray already initialised in this process, or start an embedded one.

    ``address`` attaches to a running cluster (``auto`` or host:port, e.g. inside
    a SLURM job); without it a private local cluster is started, never one
    that happens to run on the machine.
    """
    import ray

    apply_env()
    if address:
        check_reachable(address)
    if not ray.is_initialized():
        with _keeping_sigterm_handler():
            _init(ray, address, num_cpus, dashboard, object_store_mb, dashboard_host)
    for name in ("ray", "ray.tune", "ray.train"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # A failed trial's traceback: Progress prints one line for it, trials.parquet keeps the error.
    logging.getLogger("ray.tune.execution.tune_controller").setLevel(logging.CRITICAL)
    return cluster_info()


@contextlib.contextmanager
def _keeping_sigterm_handler():
    """Ray's driver installs a C++ handler that aborts on SIGTERM, over Python's own: put ours back,
    so a SLURM time limit or scancel reaches ``cnnc submit``'s handler (which records the interruption)."""
    main = threading.current_thread() is threading.main_thread()
    handler = signal.getsignal(signal.SIGTERM) if main else None
    try:
        yield
    finally:
        if main and handler is not None:
            signal.signal(signal.SIGTERM, handler)


def _init(ray, address, num_cpus, dashboard, object_store_mb, dashboard_host) -> None:
    kwargs = dict(log_to_driver=False, logging_level=logging.ERROR, configure_logging=True)
    if address:  # a cluster started elsewhere: its processes get RAY_ENV (yours win) with the job
        _CONTEXT["ray"] = ray.init(address=address, runtime_env={"env_vars": {key: os.environ[key] for key in RAY_ENV}},
                                   **kwargs)
        return
    # The embedded cluster's processes inherit this environment, RAY_ENV included. No job
    # runtime env: with one, every worker process (each trial driver, each sync actor) first
    # goes through Ray's runtime-env setup, ~1 s on 2 cores (docs/performance.md).
    # Ray's ports bind the machine's address, reachable from the network: Ray 2.60 turns
    # token auth on for a local cluster by itself (tests/test_security.py checks it; the
    # mode cannot be set here, Ray reads it once, at import).
    mem = (object_store_mb or 1024) * 1024 * 1024
    temp_dir = tempfile.mkdtemp(prefix="cnnc-ray-")
    # The private cluster's sockets and logs go with it: one folder per run would pile up in /tmp.
    atexit.register(_remove_cluster, ray, temp_dir)
    _CONTEXT["ray"] = ray.init(address="local", num_cpus=num_cpus, include_dashboard=dashboard,
                               dashboard_host=dashboard_host, object_store_memory=mem,
                               **init_temp_dir_kwargs(temp_dir), **kwargs)


def _remove_cluster(ray, temp_dir: str) -> None:
    """At exit (before Ray's own hook: atexit runs last-registered first): stop, then delete."""
    ray.shutdown()
    shutil.rmtree(temp_dir, ignore_errors=True)


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """A HOST:PORT nobody listens on fails here in seconds; ray.init would retry for a minute."""
    import socket

    if address in ("auto", "local") or ":" not in address or "://" in address:
        return
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            return
    except (OSError, ValueError) as exc:
        raise CnncError(f"--address {address}: no Ray cluster answers there ({getattr(exc, 'strerror', None) or exc})"
                        ) from None


def ray_is_running() -> bool:
    """Ray already initialised in this process (a test session, a notebook)."""
    import sys

    return "ray" in sys.modules and sys.modules["ray"].is_initialized()


def check_local_gpus(res) -> None:
    """Before an embedded Ray starts: a GPU config on a machine without one fails here, clearly."""
    if res.gpus_per_worker <= 0:
        return
    import torch

    have = torch.cuda.device_count()
    if have == 0:
        raise CnncError(f"resources.gpus_per_worker: {res.gpus_per_worker:g} GPU(s) per worker requested, but this "
                        f"machine has no CUDA GPU; set it to 0, or submit to a cluster with GPUs (--address)")
    need = res.workers_per_trial * res.gpus_per_worker
    if need > have:
        raise CnncError(f"resources: one trial needs {need:g} GPUs ({res.workers_per_trial} workers x "
                        f"{res.gpus_per_worker:g}) but this machine has {have}")


def cluster_info() -> ClusterInfo:
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    total = ray.cluster_resources()
    url = ray.get_runtime_context().gcs_address and _dashboard_url()
    return ClusterInfo(
        cpus=float(total.get("CPU", 0)),
        gpus=float(total.get("GPU", 0)),
        nodes=len(nodes),
        max_node_cpus=max((n["Resources"].get("CPU", 0) for n in nodes), default=0),
        max_node_gpus=max((n["Resources"].get("GPU", 0) for n in nodes), default=0),
        dashboard_url=url,
    )


def _dashboard_url() -> Optional[str]:
    """From what this process's ray.init returned; None where Ray was started by someone else."""
    url = getattr(_CONTEXT.get("ray"), "dashboard_url", None)
    return f"http://{url}" if url else None


def node_id() -> str:
    """This process's Ray node, shortened: several nodes on one host share its name."""
    import ray

    return ray.get_runtime_context().get_node_id()[:12]
