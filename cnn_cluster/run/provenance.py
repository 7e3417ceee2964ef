"""What a run records about where it ran: versions, hardware and the dataset (run.json)."""

from __future__ import annotations

import platform
from importlib import metadata
from typing import Any

from .. import __version__


def versions() -> dict:
    """The versions that made the run; Ray's from its installed metadata (the run folder needs no Ray)."""
    import torch

    return {"cnnc": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "ray": metadata.version("ray")}


def hardware(cluster: Any) -> dict:
    """The cluster (``cluster.ClusterInfo``) and the driver's host."""
    return {"host": platform.node(), "machine": platform.machine(), "nodes": cluster.nodes,
            "cpus": cluster.cpus, "gpus": cluster.gpus}


def dataset(data: Any) -> dict:
    """A packed dataset (``data.PackedDataset``): where it is, what it holds, how it was split."""
    return {"root": str(data.root), "layout": data.info.get("layout"), "classes": data.num_classes,
            "image_size": data.image_size, "counts": data.info.get("counts"),
            "split_rule": data.info.get("split_rule")}
