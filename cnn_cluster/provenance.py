"""What a run records about where it ran: versions, hardware and the dataset (run.json)."""

from __future__ import annotations

import platform
from typing import Any

from . import __version__


def versions() -> dict:
    import ray
    import torch

    return {"cnnc": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "ray": ray.__version__}


def hardware(cluster: Any) -> dict:
    """The cluster (``cluster.ClusterInfo``) and the driver's host."""
    return {"host": platform.node(), "machine": platform.machine(), "nodes": cluster.nodes,
            "cpus": cluster.cpus, "gpus": cluster.gpus}


def dataset(data: Any) -> dict:
    """A packed dataset (``data.PackedDataset``): where it is, what it holds, how it was split."""
    return {"root": str(data.root), "layout": data.info.get("layout"), "classes": data.num_classes,
            "image_size": data.image_size, "counts": data.info.get("counts"),
            "split_rule": data.info.get("split_rule")}
