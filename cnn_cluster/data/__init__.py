"""Datasets: the packed format, the built-in synthetic set, mini-ImageNet layouts."""

from __future__ import annotations

from pathlib import Path

from ..config import DataConfig
from ..errors import CnncError
from .packed import SPLITS, PackedDataset, is_packed, open_packed, write_packed
from .synthetic import load_synthetic

__all__ = ["SPLITS", "PackedDataset", "expected_classes", "load_dataset", "open_packed", "write_packed"]

MINI_IMAGENET_CLASSES = 100  # the published dataset's


def expected_classes(cfg: DataConfig) -> int:
    """The classes a config's data will have, without preparing it (``cnnc validate``): the
    synthetic set's setting, a packed folder's own count, else mini-ImageNet's."""
    if cfg.source == "synthetic":
        return cfg.synthetic.classes
    root = Path(cfg.root).expanduser() if cfg.root is not None else None
    if root is not None and is_packed(root):
        return open_packed(root).num_classes
    return MINI_IMAGENET_CLASSES


def load_dataset(cfg: DataConfig) -> PackedDataset:
    """The packed dataset a config names, generating or preparing it on first use; with
    ``data.boxes``, the object boxes of that CSV."""
    data = _load(cfg)
    if cfg.boxes is None:
        return data
    from .boxes import apply_boxes

    return apply_boxes(data, cfg.boxes)


def _load(cfg: DataConfig) -> PackedDataset:
    if cfg.source == "synthetic":
        return load_synthetic(cfg)
    if cfg.root is None:
        raise CnncError(f"data.root: required for data.source '{cfg.source}' "
                        "(e.g. --set data.root=/path/to/mini-imagenet)")
    root = Path(cfg.root).expanduser()
    if not root.exists():
        raise CnncError(f"data.root: {root} does not exist")
    try:
        next(iter(root.iterdir()), None) if root.is_dir() else root.open("rb").close()
    except PermissionError:
        raise CnncError(f"data.root: {root} cannot be read (permission denied)") from None
    if is_packed(root):
        return open_packed(root)
    if cfg.source == "packed":
        raise CnncError(f"data.root: {root} is not a packed dataset (no dataset.json)")
    from .miniimagenet import prepare_cached

    return open_packed(prepare_cached(root, cfg))
