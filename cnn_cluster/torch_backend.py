"""torch.distributed set-up for Ray Train that imports no torch where it is built or unpickled.

Each ``TorchTrainer.fit()`` starts a fresh controller process, and Ray's ``TorchConfig``
travels to it: unpickling it imports torch there (~2 s of CPU on a small machine, on every
trial's critical path; docs/performance.md) although the controller never touches a tensor.
``LazyTorchConfig`` keeps the controller's half of Ray's set-up (pick the master address,
send each rank its part) and runs Ray's own worker-side functions on the workers, which
import torch anyway: ``init_process_group``, NCCL settings and CUDA devices stay Ray's.

Nothing in this module, or in the package ``__init__``, may import torch at import time.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import ray
from ray.exceptions import GetTimeoutError
from ray.train._internal.utils import get_address_and_port
from ray.train.backend import Backend, BackendConfig
from ray.train.constants import DEFAULT_TORCH_PROCESS_GROUP_SHUTDOWN_TIMEOUT_S, TORCH_PROCESS_GROUP_SHUTDOWN_TIMEOUT_S
from ray.train.v2._internal.util import TrainingFramework

logger = logging.getLogger(__name__)


@dataclass
class LazyTorchConfig(BackendConfig):
    """torch.distributed over ``backend`` (gloo on CPU, nccl on GPU), ``init_method`` env."""

    backend: str = "gloo"
    timeout_s: int = 1800  # Ray's TorchConfig default, for collectives

    @property
    def backend_cls(self):
        return _LazyTorchBackend

    @property
    def train_func_context(self):
        from ray.train.torch.config import TorchConfigContextManager  # sets each worker's CUDA device

        return TorchConfigContextManager

    @property
    def framework(self):
        return TrainingFramework.TORCH


class _LazyTorchBackend(Backend):
    share_cuda_visible_devices: bool = True  # as Ray's torch backend: NCCL needs to see every local GPU

    def on_start(self, worker_group, backend_config: LazyTorchConfig) -> None:
        addr, port = worker_group.execute_single(0, get_address_and_port)
        world = len(worker_group)
        ray.get([worker_group.execute_single_async(rank, _join, backend_config.backend, rank, world, addr, port,
                                                   backend_config.timeout_s)
                 for rank in range(world)])

    def on_shutdown(self, worker_group, backend_config: LazyTorchConfig) -> None:
        timeout_s = int(os.environ.get(TORCH_PROCESS_GROUP_SHUTDOWN_TIMEOUT_S, DEFAULT_TORCH_PROCESS_GROUP_SHUTDOWN_TIMEOUT_S))
        try:
            ray.get(worker_group.execute_async(_leave, len(worker_group) > 1), timeout=timeout_s)
        except GetTimeoutError:  # as Ray's: the workers are killed next anyway
            logger.warning("torch process group shutdown timed out after %s s", timeout_s)


def _join(backend: str, rank: int, world: int, addr: str, port: int, timeout_s: int) -> None:
    """On a worker: what Ray's torch backend runs there for ``init_method="env"``."""
    from ray.train.torch.config import _set_torch_distributed_env_vars, _setup_torch_process_group

    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = addr, str(port)
    _set_torch_distributed_env_vars()
    _setup_torch_process_group(backend=backend, world_rank=rank, world_size=world, init_method="env://",
                               timeout_s=timeout_s)


def _leave(destroy: bool) -> None:
    from ray.train.torch.config import _shutdown_torch

    _shutdown_torch(destroy_process_group=destroy)
