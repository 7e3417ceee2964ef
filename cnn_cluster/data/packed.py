"""The packed dataset format every source is turned into.

A packed dataset is a folder:

- ``images.npy``: uint8 (N, H, W, 3), memory-mappable;
- ``meta.parquet``: per image ``label``, ``split`` (train/val/test), box
  ``box_x0 box_y0 box_x1 box_y1`` (-1 when unknown) and ``source`` (file name);
- ``classes.parquet``: ``label``, ``wnid``, ``name``;
- ``dataset.json``: layout, split rule, image size, per-channel mean/std of the
  train split (pixel values in [0, 1]), counts and the source fingerprint.

It is written to a hidden temporary folder and renamed into place, so a folder
that has ``dataset.json`` is always complete.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import CnncError

SPLITS = ("train", "val", "test")
FORMAT_VERSION = 1


@dataclass
class PackedDataset:
    root: Path
    images: np.ndarray  # uint8 (N, H, W, 3), usually a read-only memmap
    labels: np.ndarray  # int64 (N,)
    split: np.ndarray  # uint8 (N,): index into SPLITS
    boxes: np.ndarray  # int16 (N, 4): x0, y0, x1, y1 (exclusive); -1 when unknown
    class_names: list[str]
    wnids: list[str]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    info: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_size(self) -> int:
        return int(self.images.shape[1])

    def indices(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.split == SPLITS.index(split))


def is_packed(root: Path) -> bool:
    return (Path(root) / "dataset.json").is_file()


def open_packed(root: Path | str) -> PackedDataset:
    """Open a packed folder; the images stay on disk (memmap)."""
    root = Path(root)
    if not is_packed(root):
        raise CnncError(f"{root}: not a packed dataset (no dataset.json); run 'cnnc data prepare' first")
    info = json.loads((root / "dataset.json").read_text())
    meta = pq.read_table(root / "meta.parquet").to_pydict()
    classes = pq.read_table(root / "classes.parquet").to_pydict()
    boxes = np.stack([meta[f"box_{c}"] for c in ("x0", "y0", "x1", "y1")], axis=1).astype(np.int16)
    return PackedDataset(
        root=root,
        images=np.load(root / "images.npy", mmap_mode="r"),
        labels=np.asarray(meta["label"], dtype=np.int64),
        split=np.asarray([SPLITS.index(s) for s in meta["split"]], dtype=np.uint8),
        boxes=boxes,
        class_names=list(classes["name"]),
        wnids=list(classes["wnid"]),
        mean=tuple(info["mean"]),
        std=tuple(info["std"]),
        info=info,
    )


def channel_stats(images: np.ndarray, index: np.ndarray | None = None,
                  chunk: int = 1024) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images, in [0, 1] units.

    Exact, from per-channel histograms of the 256 byte values: much cheaper than
    float sums over every pixel, and memory stays bounded by ``chunk``.
    """
    index = np.arange(len(images)) if index is None else index
    hist = np.zeros((3, 256), np.int64)
    for start in range(0, len(index), chunk):
        part = np.asarray(images[np.sort(index[start:start + chunk])]).reshape(-1, 3)
        for c in range(3):
            hist[c] += np.bincount(part[:, c], minlength=256)
    v = np.arange(256) / 255.0
    n = np.maximum(hist.sum(1), 1)
    mean = (hist * v).sum(1) / n
    std = np.sqrt(np.maximum((hist * v ** 2).sum(1) / n - mean ** 2, 1e-12))
    return [round(float(m), 6) for m in mean], [round(float(x), 6) for x in std]


def write_packed(out: Path, images: np.ndarray, labels: np.ndarray, split: np.ndarray,
                 class_names: list[str], wnids: list[str] | None = None, boxes: np.ndarray | None = None,
                 sources: list[str] | None = None, info: dict | None = None,
                 extra_files: dict[str, str] | None = None) -> Path:
    """Write a packed dataset atomically (temporary folder, then rename)."""
    out = Path(out)
    n = len(labels)
    boxes = np.full((n, 4), -1, np.int16) if boxes is None else boxes.astype(np.int16)
    train = split == SPLITS.index("train")
    mean, std = channel_stats(images, np.flatnonzero(train) if train.any() else None)
    counts = {s: int((split == i).sum()) for i, s in enumerate(SPLITS)}
    meta = {
        "format_version": FORMAT_VERSION,
        "images": n,
        "image_size": int(images.shape[1]),
        "num_classes": len(class_names),
        "counts": counts,
        "mean": mean,
        "std": std,
        **(info or {}),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        np.save(tmp / "images.npy", np.ascontiguousarray(images, dtype=np.uint8))
        pq.write_table(pa.table({
            "label": pa.array(labels, pa.int32()),
            "split": pa.array([SPLITS[i] for i in split], pa.string()),
            **{f"box_{c}": pa.array(boxes[:, j], pa.int16()) for j, c in enumerate(("x0", "y0", "x1", "y1"))},
            "source": pa.array(sources if sources is not None else [""] * n, pa.string()),
        }), tmp / "meta.parquet")
        pq.write_table(pa.table({
            "label": pa.array(range(len(class_names)), pa.int32()),
            "wnid": pa.array(wnids or list(class_names), pa.string()),
            "name": pa.array(class_names, pa.string()),
        }), tmp / "classes.parquet")
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text)
        # dataset.json last: its presence marks the folder complete.
        (tmp / "dataset.json").write_text(json.dumps(meta, indent=2))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def stratified_split(labels: np.ndarray, fractions: tuple[float, float, float], seed: int) -> np.ndarray:
    """Split each class's images by the fractions, seeded and stable; returns split codes."""
    split = np.zeros(len(labels), np.uint8)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng = np.random.default_rng([seed, int(c)])
        idx = idx[rng.permutation(len(idx))]
        n_test = max(1, round(fractions[2] * len(idx))) if len(idx) >= 3 else 0
        n_val = max(1, round(fractions[1] * len(idx))) if len(idx) >= 3 else 0
        split[idx[len(idx) - n_test:]] = 2
        split[idx[len(idx) - n_test - n_val:len(idx) - n_test]] = 1
    return split
