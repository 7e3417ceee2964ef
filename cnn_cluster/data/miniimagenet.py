"""mini-ImageNet in every published layout, decoded once into the packed format.

Layouts (detected from what is on disk, or chosen with ``data.format``):

- ``csv``: ``images/*.jpg`` with ``train.csv``, ``val.csv``, ``test.csv`` (filename,label);
- ``folders``: ``ROOT/<wnid>/*.jpg`` or ``ROOT/{train,val,test}/<wnid>/*.jpg``;
- ``pickle``: ``mini-imagenet-cache-{train,val,test}.pkl`` (``image_data``, ``class_dict``);
- ``parquet``: shards with an ``image`` struct (``bytes``, ``path``) and an integer ``label``.

Bad files are skipped and listed in ``prepare-report.json``; what cannot be
handled sensibly stops with one line naming the file, and nothing is written.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np

from .. import logs
from ..config import DataConfig
from ..errors import CnncError
from .packed import SPLITS, byte_hist, is_packed, packing, stats_sample, stratified_split, write_meta
from .safe_pickle import load as safe_load
from .synthetic import cache_root

log = logs.get("data")

LAYOUTS = ("csv", "folders", "pickle", "parquet")
LOOKED_FOR = ("csv (images/ with train.csv, val.csv, test.csv), folders (ROOT/<wnid>/*.jpg or "
              "ROOT/{train,val,test}/<wnid>/*.jpg), pickle (mini-imagenet-cache-{train,val,test}.pkl), "
              "parquet (*.parquet shards with image and label columns)")
IMAGE_EXT = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
_CLASSES = json.loads((Path(__file__).with_name("miniimagenet_classes.json")).read_text())["classes"]
Item = Union[Path, bytes, np.ndarray]


@dataclass
class Source:
    layout: str
    items: list[Item] = field(default_factory=list)  # a path, encoded bytes or a decoded array per image
    names: list[str] = field(default_factory=list)  # where each image came from
    classes: list[str] = field(default_factory=list)  # wnid (or class name) per image
    splits: list[Optional[str]] = field(default_factory=list)  # the source's split per image, if any
    skipped: list[dict] = field(default_factory=list)  # {"file", "reason"}
    class_names: dict[str, str] = field(default_factory=dict)  # class -> readable name, when the source has them

    def add(self, item: Item, name: str, cls: str, split: Optional[str]) -> None:
        self.items.append(item)
        self.names.append(name)
        self.classes.append(cls)
        self.splits.append(split)


def class_name(wnid: str) -> str:
    return _CLASSES.get(wnid, {}).get("name", wnid)


# --------------------------------------------------------------------------- layouts


def detect(root: Path, fmt: str = "auto") -> str:
    """Which layout ``root`` holds; a clear error listing the layouts looked for."""
    root = Path(root)
    if not root.is_dir():
        raise CnncError(f"{root}: no such folder")
    if not os.access(root, os.R_OK | os.X_OK):
        raise CnncError(f"{root}: folder is not readable")
    if fmt != "auto":
        return fmt
    if any((root / f"{s}.csv").is_file() for s in ("train", "val", "test")):
        return "csv"
    if any(root.glob("mini-imagenet-cache-*.pkl")):
        return "pickle"
    if any(root.rglob("*.parquet")):
        return "parquet"
    if any(p.is_dir() for p in root.iterdir()):
        return "folders"
    raise CnncError(f"{root}: matches no mini-ImageNet layout; looked for {LOOKED_FOR}")


def read_source(root: Path, fmt: str = "auto") -> Source:
    layout = detect(root, fmt)
    return {"csv": _read_csv, "folders": _read_folders, "pickle": _read_pickle, "parquet": _read_parquet}[layout](
        Path(root))


def _read_csv(root: Path) -> Source:
    src = Source("csv")
    images = root / "images"
    present = set(os.listdir(images)) if images.is_dir() else set()
    for split in ("train", "val", "test"):
        path = root / f"{split}.csv"
        if not path.is_file():
            continue
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
        for line, row in enumerate(rows[1:], start=2):
            if len(row) < 2:
                src.skipped.append({"file": f"{path.name}:{line}", "reason": "malformed row"})
                continue
            file = images / row[0]
            if row[0] not in present:
                src.skipped.append({"file": f"{path.name}:{line}", "reason": f"names a missing file {row[0]}"})
                continue
            src.add(file, f"images/{row[0]}", row[1].strip(), split)
    return src


def _read_folders(root: Path) -> Source:
    src = Source("folders")
    split_dirs = [s for s in ("train", "val", "test") if (root / s).is_dir()]
    for split in split_dirs or [None]:
        base = root / split if split else root
        for cls_dir in sorted(p for p in base.iterdir() if p.is_dir()):
            _read_class_folder(src, root, cls_dir, split)
    return src


def _read_class_folder(src: Source, root: Path, cls_dir: Path, split: Optional[str]) -> None:
    rel = cls_dir.relative_to(root)
    try:
        files = sorted(p for p in cls_dir.iterdir() if p.is_file())
    except PermissionError:
        src.skipped.append({"file": str(rel), "reason": "unreadable folder"})
        return
    images = [p for p in files if p.suffix.lower() in IMAGE_EXT]
    for p in files:
        if p.suffix.lower() not in IMAGE_EXT:
            src.skipped.append({"file": str(p.relative_to(root)), "reason": "not an image file"})
    if not images:
        src.skipped.append({"file": str(rel), "reason": "empty class folder"})
    for p in images:
        src.add(p, str(p.relative_to(root)), cls_dir.name, split)


def _read_pickle(root: Path) -> Source:
    src = Source("pickle")
    for split in ("train", "val", "test"):
        path = root / f"mini-imagenet-cache-{split}.pkl"
        if not path.is_file():
            continue
        data = safe_load(path)
        if not isinstance(data, dict) or "image_data" not in data or "class_dict" not in data:
            raise CnncError(f"{path}: expected a dict with image_data and class_dict")
        images = np.asarray(data["image_data"])
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise CnncError(f"{path}: image_data must be uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
        for wnid, idx in sorted(data["class_dict"].items()):
            for i in idx:
                src.add(images[int(i)], f"{path.name}[{int(i)}]", str(wnid), split)
    return src


def _read_parquet(root: Path) -> Source:
    import pyarrow.parquet as pq

    src = Source("parquet")
    for path in sorted(root.rglob("*.parquet")):
        try:
            table = pq.read_table(path)
        except Exception as exc:  # noqa: BLE001 - any unreadable shard is skipped and listed
            src.skipped.append({"file": str(path.relative_to(root)), "reason": f"unreadable Parquet ({exc})"[:200]})
            continue
        if "image" not in table.column_names or "label" not in table.column_names:
            raise CnncError(f"{path}: a Parquet shard needs 'image' and 'label' columns "
                            f"(has {', '.join(table.column_names)})")
        names = _hf_label_names(table.schema.metadata or {})
        split = _split_from_name(path.relative_to(root))
        for i, (image, label) in enumerate(zip(table.column("image").to_pylist(), table.column("label").to_pylist())):
            blob = image.get("bytes") if isinstance(image, dict) else image
            cls = names[label] if label is not None and label < len(names) else str(label)
            src.add(blob or b"", f"{path.name}[{i}]", cls, split)
    return src


def _hf_label_names(metadata: dict) -> list[str]:
    """Class names from a Hugging Face dataset's schema metadata (features.label.names)."""
    raw = metadata.get(b"huggingface")
    try:
        return list(json.loads(raw)["info"]["features"]["label"]["names"]) if raw else []
    except (KeyError, TypeError, ValueError):
        return []


def _split_from_name(rel: Path) -> Optional[str]:
    for part in (rel.stem.lower(), *(p.lower() for p in rel.parts[:-1])):
        for prefix, split in (("train", "train"), ("validation", "val"), ("val", "val"), ("test", "test")):
            if part.startswith(prefix):
                return split
    return None


# --------------------------------------------------------------------------- decoding


def _decode(item: Item, size: int) -> np.ndarray:
    """One image as uint8 (size, size, 3) RGB; raises on anything undecodable."""
    if isinstance(item, np.ndarray):
        img = item
    else:
        data = item.read_bytes() if isinstance(item, Path) else item
        img = _jpeg(data) if data[:2] == b"\xff\xd8" else None
        if img is None:
            from PIL import Image

            with Image.open(io.BytesIO(data)) as im:
                im.draft("RGB", (size, size))  # JPEG: decode at a reduced scale when the source is large
                img = np.asarray(im.convert("RGB"))
    if img.shape[:2] != (size, size):
        from PIL import Image

        img = np.asarray(Image.fromarray(img).resize((size, size), Image.BICUBIC))
    return np.ascontiguousarray(img, dtype=np.uint8)


def _jpeg(data: bytes) -> Optional[np.ndarray]:
    """libjpeg-turbo via simplejpeg; None for what it cannot read (CMYK, broken files): Pillow tries those."""
    import simplejpeg

    try:
        return simplejpeg.decode_jpeg(data, colorspace="RGB")
    except (ValueError, RuntimeError):
        return None


def _decode_chunk(items: list[Item], size: int, out: np.ndarray, sample: np.ndarray,
                  hist: np.ndarray) -> list[Optional[str]]:
    """Decode into ``out`` (this chunk's slice); histograms of the ``sample`` rows into ``hist``."""
    errors: list[Optional[str]] = []
    for k, item in enumerate(items):
        try:
            out[k] = _decode(item, size)
            errors.append(None)
        except Exception as exc:  # noqa: BLE001 - a bad image is skipped and listed, whatever the error
            errors.append(f"undecodable image ({type(exc).__name__})")
    if len(sample):  # while the pixels are in cache
        hist += byte_hist(out[sample])
    return errors


def decode_all(src: Source, images: np.ndarray, progress: Callable[[int, int], None] | None = None,
               workers: Optional[int] = None, sample: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray]:
    """Decode every item into ``images`` in parallel threads (the decoders release the GIL).

    Returns the kept-mask and the byte histograms (3, 256) of the ``sample`` rows.
    """
    n, size = len(src.items), images.shape[1]
    ok = np.zeros(n, bool)
    chunk = 256
    starts = list(range(0, n, chunk))
    sample = np.zeros(0, int) if sample is None else np.asarray(sample)
    hists = np.zeros((len(starts), 3, 256), np.int64)
    # One thread more than cores: the decoders release the GIL, the file reads and
    # copies around them do not, and an extra thread keeps both cores decoding.
    with ThreadPoolExecutor(workers or (os.cpu_count() or 1) + 1) as pool:
        futures = [pool.submit(_decode_chunk, src.items[a:a + chunk], size, images[a:a + chunk],
                               sample[(sample >= a) & (sample < a + chunk)] - a, hists[i])
                   for i, a in enumerate(starts)]
        for a, fut in zip(starts, futures):
            for j, err in enumerate(fut.result()):
                if err:
                    src.skipped.append({"file": src.names[a + j], "reason": err})
                else:
                    ok[a + j] = True
            if progress:
                progress(min(a + chunk, n), n)
    return ok, hists.sum(0)


# --------------------------------------------------------------------------- splits


def split_rule(classes: list[str], splits: list[Optional[str]], fractions: tuple[float, float, float],
               seed: int, labels: np.ndarray) -> tuple[np.ndarray, str]:
    """Split codes per image and the rule applied, in words."""
    given = {s for s in splits if s}
    pooled = f"pooled: each class split {'/'.join(f'{round(100 * f)}' for f in fractions)} (seed {seed})"
    if not given or any(s is None for s in splits):
        return stratified_split(labels, fractions, seed), pooled + "; the source has no splits"
    per_split = {s: {c for c, t in zip(classes, splits) if t == s} for s in given}
    sets = list(per_split.values())
    if all(not (a & b) for i, a in enumerate(sets) for b in sets[i + 1:]) and len(sets) > 1:
        return stratified_split(labels, fractions, seed), pooled + "; the source's splits hold disjoint classes"
    codes = np.array([SPLITS.index(s) for s in splits], np.uint8)
    carved = [s for s in ("val", "test") if s not in given]
    for s in carved:  # carve a missing split out of train, stratified by class, seeded
        train = np.flatnonzero(codes == 0)
        frac = fractions[SPLITS.index(s)] / (fractions[0] + sum(fractions[SPLITS.index(c)] for c in carved))
        sub = stratified_split(labels[train], (1 - frac, frac / 2, frac / 2), seed)
        codes[train[sub > 0]] = SPLITS.index(s)
    note = f"; {' and '.join(carved)} carved out of train per class (seed {seed})" if carved else ""
    return codes, "the source's own splits (shared classes)" + note


# --------------------------------------------------------------------------- prepare


def fingerprint(root: Path, opts: dict) -> str:
    """Hash of every file's relative path and size under ``root``, and the options."""
    h = hashlib.sha256(json.dumps(opts, sort_keys=True).encode())
    stack = [""]
    while stack:
        rel = stack.pop()
        try:
            entries = sorted(os.scandir(os.path.join(root, rel)), key=lambda e: e.name)
        except OSError:
            h.update(f"{rel}\0unreadable\n".encode())
            continue
        lines = []
        for e in entries:
            path = f"{rel}/{e.name}" if rel else e.name
            if e.is_dir(follow_symlinks=False):
                stack.append(path)
            else:
                try:
                    lines.append(f"{path}\0{e.stat().st_size}\n")
                except OSError:
                    lines.append(f"{path}\0?\n")
        h.update("".join(lines).encode())
    return h.hexdigest()[:16]


def prepare(root: Path, out: Path, size: int = 84, fmt: str = "auto", fractions=(0.8, 0.1, 0.1), seed: int = 0,
            progress: Callable[[int, int], None] | None = None) -> tuple[Path, bool]:
    """Pack ``root`` into ``out``; (path, reused) — a second run with the same inputs reuses the result."""
    root, out = Path(root), Path(out)
    layout = detect(root, fmt)
    opts = {"v": 1, "size": size, "layout": layout, "split": list(fractions), "seed": seed}
    fp = fingerprint(root, opts)
    if is_packed(out) and json.loads((out / "dataset.json").read_text()).get("fingerprint") == fp:
        return out, True
    src = read_source(root, layout)
    if not src.items:
        raise CnncError(f"{root}: no images found in the {layout} layout ({len(src.skipped)} entries skipped)")
    # Splits depend only on the listing, so they (and the stats sample) are known
    # before decoding; only if an image fails are they worked out again.
    order, labels, split, rule = _labels_and_split(src.classes, src.splits, fractions, seed)
    log.debug(f"{root}: {layout} layout, {len(src.items)} images in {len(order)} classes, "
              f"{len(src.skipped)} entries skipped; packing {size}x{size} into {out}")
    with packing(out) as tmp:
        # Decode straight into the file that will be kept: no second pass over the pixels.
        images = np.lib.format.open_memmap(tmp / "images.npy", "w+", np.uint8, (len(src.items), size, size, 3))
        ok, hist = decode_all(src, images, progress, sample=stats_sample(split))
        if not ok.any():
            raise CnncError(f"{root}: none of the {len(ok)} images could be decoded; first: {src.skipped[0]['file']}")
        keep = np.flatnonzero(ok)
        if len(keep) < len(ok):  # rare: rewrite without the images that failed
            kept = np.asarray(images[keep])
            del images
            np.save(tmp / "images.npy", kept)
            images, hist = kept, None
            order, labels, split, rule = _labels_and_split([src.classes[i] for i in keep],
                                                           [src.splits[i] for i in keep], fractions, seed)
        info = {"layout": layout, "split_rule": rule, "fingerprint": fp, "source": str(root.resolve())}
        write_meta(tmp, images, labels, split, [src.class_names.get(c) or class_name(c) for c in order],
                   wnids=order, sources=[src.names[i] for i in keep], info=info, hist=hist,
                   extra_files={"prepare-report.json": json.dumps(_report(src, labels, order, len(ok)), indent=2)})
        del images
    return out, False


def _labels_and_split(classes: list[str], splits: list[Optional[str]], fractions, seed: int):
    order = sorted(set(classes))
    index = {c: i for i, c in enumerate(order)}
    labels = np.array([index[c] for c in classes])
    split, rule = split_rule(classes, splits, tuple(fractions), seed, labels)
    return order, labels, split, rule


def _report(src: Source, labels: np.ndarray, order: list[str], total: int) -> dict:
    counts = np.bincount(labels, minlength=len(order))
    median = float(np.median(counts)) if len(counts) else 0.0
    small = [{"class": order[i], "images": int(c), "median": median} for i, c in enumerate(counts) if c < median / 2]
    return {"images_found": total, "images_kept": int(len(labels)), "skipped": src.skipped,
            "skipped_count": len(src.skipped), "small_classes": small}


def prepare_cached(root: Path, cfg: DataConfig, out: Optional[Path] = None) -> Path:
    """``cnnc submit`` on a raw layout: prepare once into the cache, then reuse."""
    root = Path(root)
    dest = out or cache_root() / "prepared" / f"{root.resolve().name}-{hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:8]}"
    path, reused = prepare(root, dest, cfg.image_size, cfg.format, cfg.split, cfg.seed, progress=log_progress)
    if not reused:
        log.info(f"prepared {root} -> {path}")
    return path


def log_progress(done: int, total: int) -> None:
    """Decoding progress: a bar in the terminal's live block, or a logged line every ~5 % (a log)."""
    bar = f"decoding [{'#' * int(30 * done / total):<30}] {done}/{total} images"
    block = logs.live_block()
    if done == total:
        if block:
            block.show([])
        log.info(bar)
    elif block:
        block.show([bar])
    elif done % max(1, total // 20) < 256:  # progress is called every 256 images
        log.info(bar)
