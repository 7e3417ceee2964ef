"""Tiny mini-ImageNet lookalikes in each published layout, written by the tests themselves."""

from __future__ import annotations

import csv
import io
import pickle
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from cnn_cluster.data.synthetic import render

WNIDS = ["n01532829", "n01558993", "n01704323", "n01749939", "n01770081"]  # house finch, robin, ...
PER_CLASS = 12


def jpeg_bytes(c: int, i: int, size: int = 84) -> bytes:
    img, _ = render(i, c % 10, seed=7)
    im = Image.fromarray(img)
    if size != 84:
        im = im.resize((size, size))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _all(size: int = 84):
    return [(c, i, jpeg_bytes(c, i, size)) for c in range(len(WNIDS)) for i in range(PER_CLASS)]


def write_csv(root: Path, fewshot: bool = True) -> Path:
    """Ravi-Larochelle: images/ + train/val/test.csv; few-shot = disjoint classes per split."""
    (root / "images").mkdir(parents=True)
    rows = {"train": [], "val": [], "test": []}
    for c, i, blob in _all():
        name = f"{WNIDS[c]}{i:08d}.jpg"
        (root / "images" / name).write_bytes(blob)
        split = ["train", "train", "train", "val", "test"][c] if fewshot else (["train"] * 8 + ["val"] * 2
                                                                              + ["test"] * 2)[i]
        rows[split].append((name, WNIDS[c]))
    for split, items in rows.items():
        with open(root / f"{split}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["filename", "label"])
            w.writerows(items)
    return root


def write_folders(root: Path, splits: tuple[str, ...] = (), size: int = 84) -> Path:
    """ROOT/<wnid>/*.jpg, or ROOT/<split>/<wnid>/*.jpg sharing classes across splits."""
    for c, i, blob in _all(size):
        split = splits[i % len(splits)] if splits else ""
        d = root / split / WNIDS[c]
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{WNIDS[c]}_{i}.JPEG").write_bytes(blob)
    return root


def write_pickle(root: Path) -> Path:
    """mini-imagenet-cache-{train,val,test}.pkl with the decoded JPEGs, few-shot class split."""
    root.mkdir(parents=True, exist_ok=True)
    for split, classes in (("train", [0, 1, 2]), ("val", [3]), ("test", [4])):
        arrays, class_dict = [], {}
        for c in classes:
            class_dict[WNIDS[c]] = list(range(len(arrays), len(arrays) + PER_CLASS))
            arrays += [np.asarray(Image.open(io.BytesIO(jpeg_bytes(c, i))).convert("RGB")) for i in range(PER_CLASS)]
        with open(root / f"mini-imagenet-cache-{split}.pkl", "wb") as f:
            pickle.dump({"image_data": np.stack(arrays), "class_dict": class_dict}, f)
    return root


def write_parquet(root: Path) -> Path:
    """Hugging Face style shards: image {bytes, path}, label, class names in the schema metadata."""
    import json

    (root / "data").mkdir(parents=True)
    meta = {"info": {"features": {"image": {"_type": "Image"},
                                  "label": {"names": WNIDS, "_type": "ClassLabel"}}}}
    items = _all()
    for split, part in (("train", items[0::2]), ("test", items[1::2])):
        table = pa.table({
            "image": pa.array([{"bytes": b, "path": f"{WNIDS[c]}_{i}.jpg"} for c, i, b in part],
                              pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
            "label": pa.array([c for c, _, _ in part], pa.int64()),
        }).replace_schema_metadata({"huggingface": json.dumps(meta)})
        pq.write_table(table, root / "data" / f"{split}-00000-of-00001.parquet")
    return root


class Evil:
    """A pickle payload that would create a file if it were ever unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os
        return (os.system, (f"touch {self.marker}",))


def write_evil_pickle(root: Path, marker: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "mini-imagenet-cache-train.pkl", "wb") as f:
        pickle.dump({"image_data": Evil(marker), "class_dict": {}}, f)
    return root
