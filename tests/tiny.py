"""The one tiny sweep config of the suite and the benchmarks: trains in seconds on the built-in data."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import yaml


def tiny_config(out: Optional[Path] = None, **sections) -> dict:
    """A sweep small enough to train in seconds: 4 classes x 24 images, 1 epoch, 1-CPU workers.

    ``out``: the folder whose ``runs/`` holds the run folders. Each keyword replaces a section;
    a dict is merged into the section's top level (``train={"epochs": 3}`` keeps batch_size).
    """
    cfg = {
        "name": "tiny",
        "data": {"synthetic": {"classes": 4, "images_per_class": 24}},
        "train": {"epochs": 1, "batch_size": 16},
        "experiments": [
            {"name": "a", "conv_filters": [4], "fc_layers": [8]},
            {"name": "b", "conv_filters": [4, 8], "fc_layers": [], "max_pool": False, "stride": 2},
        ],
        "resources": {"workers_per_trial": 1, "cpus_per_worker": 1},
    }
    if out is not None:
        cfg["output"] = {"root": str(Path(out) / "runs")}
    for key, value in sections.items():
        cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value
    return cfg


def write_config(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path
