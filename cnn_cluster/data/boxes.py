"""Object boxes for real images, from a CSV: what Part B's object-or-context verdict needs.

Two formats, told apart by their header:

- ``filename,x0,y0,x1,y1``: one box per image, in pixels of the original image (x1, y1 exclusive);
- ImageNet's ``LOC_train_solution.csv`` (``ImageId,PredictionString``, the string holding
  ``wnid x0 y0 x1 y1`` once per object): the objects of the image's own class, merged into the
  one box that encloses them.

A row names an image by its path relative to the dataset's source, by its file name, or by its
file name without extension. Boxes are scaled with the image to ``image_size``; images without a
row keep no box and are simply not scored.
"""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import numpy as np

from ..errors import CnncError
from .packed import PackedDataset


def read_boxes(path: Path) -> dict[str, list[tuple[str, tuple[int, int, int, int]]]]:
    """Image key -> [(wnid or '', box)], from either format; CnncError naming the file and line."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
    except FileNotFoundError:
        raise CnncError(f"data.boxes: {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CnncError(f"data.boxes: {path} cannot be read ({exc})") from None
    header = [h.strip().lower() for h in rows[0]] if rows else []
    if header[:5] == ["filename", "x0", "y0", "x1", "y1"]:
        parse = _plain_row
    elif header[:2] == ["imageid", "predictionstring"]:
        parse = _loc_row
    else:
        raise CnncError(f"data.boxes: {path}: the header must be 'filename,x0,y0,x1,y1' or ImageNet's "
                        f"'ImageId,PredictionString' (got {','.join(rows[0]) if rows else 'an empty file'!r})")
    out: dict[str, list] = {}
    for line, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        try:
            key, objects = parse(row)
        except (ValueError, IndexError):
            raise CnncError(f"data.boxes: {path} line {line}: cannot read {','.join(row)!r}") from None
        out.setdefault(key, []).extend(objects)
    return out


def _plain_row(row: list[str]) -> tuple[str, list]:
    x0, y0, x1, y1 = (int(float(v)) for v in row[1:5])
    if x1 <= x0 or y1 <= y0:
        raise ValueError("empty box")
    return row[0].strip(), [("", (x0, y0, x1, y1))]


def _loc_row(row: list[str]) -> tuple[str, list]:
    words = row[1].split()
    if not words or len(words) % 5:
        raise ValueError("not wnid x0 y0 x1 y1 groups")
    objects = [(words[i], tuple(int(float(v)) for v in words[i + 1:i + 5])) for i in range(0, len(words), 5)]
    return row[0].strip(), objects


def apply_boxes(data: PackedDataset, path: Path) -> PackedDataset:
    """``data`` with the boxes of ``path``, scaled to its image size; every other image has none."""
    table = read_boxes(Path(path).expanduser())
    source_root = Path(data.info.get("source") or data.root)
    size = data.image_size
    boxes = np.full((len(data.labels), 4), -1, np.int16)
    for i, source in enumerate(data.sources):
        objects = _lookup(table, source)
        if not objects:
            continue
        own = [b for w, b in objects if w in ("", data.wnids[data.labels[i]])] or [b for _, b in objects]
        width, height = original_size(source_root / source, size)
        x0, y0 = min(b[0] for b in own), min(b[1] for b in own)
        x1, y1 = max(b[2] for b in own), max(b[3] for b in own)
        boxes[i] = _scaled((x0, y0, x1, y1), size / width, size / height, size)
    if (boxes[:, 0] < 0).all():
        raise CnncError(f"data.boxes: {path}: no row names an image of the dataset (rows name images by "
                        f"their path, file name or file name without extension, e.g. {data.sources[0]!r})")
    return dataclasses.replace(data, boxes=boxes)


def _lookup(table: dict, source: str) -> list:
    p = Path(source)
    for key in (source, p.name, p.stem):
        if key in table:
            return table[key]
    return []


def original_size(file: Path, size: int) -> tuple[int, int]:
    """The source image's (width, height), read from its header; the packed size where it has no file."""
    from PIL import Image

    try:
        with Image.open(file) as im:
            return im.size
    except OSError:
        return size, size


def _scaled(box: tuple, sx: float, sy: float, size: int) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = box
    return (max(0, int(x0 * sx)), max(0, int(y0 * sy)), min(size, max(int(x0 * sx) + 1, round(x1 * sx))),
            min(size, max(int(y0 * sy) + 1, round(y1 * sy))))
