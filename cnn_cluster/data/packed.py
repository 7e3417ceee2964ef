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

import contextlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import CnncError

SPLITS = ("train", "val", "test")
FORMAT_VERSION = 1
# Mean/std come from at most this many train images, evenly spaced: within ~1e-3 of
# the full-set values for mini-ImageNet, and exact for smaller sets.
STATS_IMAGES = 1024


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
    sources: list[str] = field(default_factory=list)  # each image's file, relative to info["source"]

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
        sources=list(meta.get("source") or [""] * len(meta["label"])),
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
        hist += byte_hist(np.asarray(images[np.sort(index[start:start + chunk])]))
    return stats_from_hist(hist)


def byte_hist(images: np.ndarray) -> np.ndarray:
    """(3, 256) counts of each byte value per channel."""
    flat = images.reshape(-1, 3)
    return np.stack([np.bincount(flat[:, c], minlength=256) for c in range(3)])


def stats_from_hist(hist: np.ndarray) -> tuple[list[float], list[float]]:
    v = np.arange(256) / 255.0
    n = np.maximum(hist.sum(1), 1)
    mean = (hist * v).sum(1) / n
    std = np.sqrt(np.maximum((hist * v ** 2).sum(1) / n - mean ** 2, 1e-12))
    return [round(float(m), 6) for m in mean], [round(float(x), 6) for x in std]


@contextlib.contextmanager
def packing(out: Path) -> Iterator[Path]:
    """A hidden temporary folder beside ``out``, renamed to ``out`` on success, removed on failure."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_packed(out: Path, images: np.ndarray, labels: np.ndarray, split: np.ndarray,
                 class_names: list[str], wnids: list[str] | None = None, boxes: np.ndarray | None = None,
                 sources: list[str] | None = None, info: dict | None = None,
                 extra_files: dict[str, str] | None = None) -> Path:
    """Write a packed dataset atomically (temporary folder, then rename)."""
    with packing(out) as tmp:
        np.save(tmp / "images.npy", np.ascontiguousarray(images, dtype=np.uint8))
        write_meta(tmp, images, labels, split, class_names, wnids, boxes, sources, info, extra_files)
    return Path(out)


def write_meta(folder: Path, images: np.ndarray, labels: np.ndarray, split: np.ndarray, class_names: list[str],
               wnids: list[str] | None = None, boxes: np.ndarray | None = None, sources: list[str] | None = None,
               info: dict | None = None, extra_files: dict[str, str] | None = None,
               hist: np.ndarray | None = None) -> None:
    """Everything but images.npy; dataset.json last, since its presence marks the folder complete.

    ``hist``: byte histograms (3, 256) of the images ``stats_sample(split)`` names,
    when the caller gathered them already (``cnnc data prepare`` does, while decoding).
    """
    n = len(labels)
    boxes = np.full((n, 4), -1, np.int16) if boxes is None else boxes.astype(np.int16)
    mean, std = stats_from_hist(hist) if hist is not None else channel_stats(images, stats_sample(split))
    meta = {
        "format_version": FORMAT_VERSION,
        "images": n,
        "image_size": int(images.shape[1]),
        "num_classes": len(class_names),
        "counts": {s: int((split == i).sum()) for i, s in enumerate(SPLITS)},
        "mean": mean,
        "std": std,
        **(info or {}),
    }
    pq.write_table(pa.table({
        "label": pa.array(labels, pa.int32()),
        "split": pa.array([SPLITS[i] for i in split], pa.string()),
        **{f"box_{c}": pa.array(boxes[:, j], pa.int16()) for j, c in enumerate(("x0", "y0", "x1", "y1"))},
        "source": pa.array(sources if sources is not None else [""] * n, pa.string()),
    }), folder / "meta.parquet")
    pq.write_table(pa.table({
        "label": pa.array(range(len(class_names)), pa.int32()),
        "wnid": pa.array(wnids or list(class_names), pa.string()),
        "name": pa.array(class_names, pa.string()),
    }), folder / "classes.parquet")
    for name, text in (extra_files or {}).items():
        (folder / name).write_text(text)
    (folder / "dataset.json").write_text(json.dumps(meta, indent=2))


def stats_sample(split: np.ndarray) -> np.ndarray:
    """The images whose pixels give the mean and std: train images, evenly spaced, at most STATS_IMAGES."""
    train = np.flatnonzero(split == SPLITS.index("train"))
    return _spread(train if len(train) else np.arange(len(split)), STATS_IMAGES)


def _spread(index: np.ndarray, k: int) -> np.ndarray:
    """At most ``k`` evenly spaced entries: all of them for small sets (exact statistics)."""
    return index if len(index) <= k else index[np.linspace(0, len(index) - 1, k).astype(int)]


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
