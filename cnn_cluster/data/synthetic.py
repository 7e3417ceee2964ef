"""The built-in dataset: procedural objects on cluttered backgrounds, 84x84 RGB.

A class is a (shape, texture) pair; colour, scale, rotation and position vary
per image, and the background is a random gradient with clutter strokes and
noise. Every image records its object's bounding box. Generation is
deterministic per (seed, image index), so any subset regenerates identically.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
from pathlib import Path

import numpy as np

from ..config import DataConfig
from .packed import PackedDataset, is_packed, open_packed, stratified_split, write_packed

SHAPES = ("disk", "square", "triangle", "diamond", "plus", "ring", "frame", "cross", "half-disk", "bar")
TEXTURES = ("solid", "stripes", "checks", "dots", "waves", "grid", "diagonal", "rings", "speckle", "half")
_CUE = 8  # side of the planted context-cue patch, pixels


def class_names(k: int) -> list[str]:
    """Class k: shape k % 10, texture k // 10, so the first 10 differ by shape alone."""
    return [f"{SHAPES[i % 10]}" + ("" if i < 10 else f"-{TEXTURES[i // 10]}") for i in range(k)]


def _shape_mask(kind: int, u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    d = np.hypot(u, v)
    au, av = np.abs(u), np.abs(v)
    if kind == 0:
        return d < r
    if kind == 1:
        return np.maximum(au, av) < 0.85 * r
    if kind == 2:
        return (v < 0.7 * r) & (v > 1.9 * au - r)
    if kind == 3:
        return au + av < r
    if kind == 4:
        return ((au < 0.3 * r) & (av < r)) | ((av < 0.3 * r) & (au < r))
    if kind == 5:
        return (d < r) & (d > 0.55 * r)
    if kind == 6:
        m = np.maximum(au, av)
        return (m < 0.9 * r) & (m > 0.55 * r)
    if kind == 7:
        p, q = np.abs(u + v) / np.sqrt(2), np.abs(u - v) / np.sqrt(2)
        return ((p < 0.25 * r) & (q < r)) | ((q < 0.25 * r) & (p < r))
    if kind == 8:
        return (d < r) & (v > -0.1 * r)
    return (u / r) ** 2 + (v / (0.4 * r)) ** 2 < 1


def _texture(kind: int, u: np.ndarray, v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A [0, 1] modulation of the object's colour."""
    f = 0.9
    patterns = {
        0: lambda: np.ones_like(u),
        1: lambda: np.sin(u * f) > 0,
        2: lambda: (np.floor(u / 4) + np.floor(v / 4)) % 2,
        3: lambda: (np.sin(u * f) * np.sin(v * f)) > 0.5,
        4: lambda: np.sin(u * f + 2 * np.sin(v * 0.4)) > 0,
        5: lambda: (np.abs(np.sin(u * f)) < 0.4) | (np.abs(np.sin(v * f)) < 0.4),
        6: lambda: np.sin((u + v) * f) > 0,
        7: lambda: np.sin(np.hypot(u, v) * 1.2) > 0,
        8: lambda: rng.random(u.shape) > 0.5,
        9: lambda: u > 0,
    }
    return 0.35 + 0.65 * patterns[kind]().astype(float)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    py, px = np.mgrid[0:size, 0:size].astype(float)
    yy, xx = py / size, px / size
    c0, c1 = rng.random(3), rng.random(3)
    angle = rng.uniform(0, 2 * np.pi)
    t = (np.cos(angle) * xx + np.sin(angle) * yy + 1) / 2
    img = c0 * (1 - t[..., None]) + c1 * t[..., None]
    for _ in range(rng.integers(2, 6)):  # clutter: random strokes
        x0, y0, x1, y1 = rng.uniform(0, size, 4)
        w = rng.uniform(0.6, 1.8)
        dx, dy = x1 - x0, y1 - y0
        t2 = np.clip(((px - x0) * dx + (py - y0) * dy) / (dx * dx + dy * dy + 1e-9), 0, 1)
        dist = np.hypot(px - x0 - t2 * dx, py - y0 - t2 * dy)
        img[dist < w] = rng.random(3)
    return img


def render(index: int, label: int, seed: int, size: int = 84, cue: bool = False,
           num_classes: int = 10) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Image ``index`` of class ``label``: uint8 (size, size, 3) and its box (x0, y0, x1, y1)."""
    rng = np.random.default_rng([seed, index, label])
    img = _background(rng, size)
    r = rng.uniform(0.2, 0.32) * size
    # Near the centre, as in object-centred photos: the study's CNNs have no
    # global pooling, so their FC layer must learn each class at each place.
    margin = r + 2
    lo = margin + (_CUE + 4 if cue else 0)  # keep the object off the cue's corner
    cx, cy = (float(np.clip(size / 2 + rng.uniform(-0.15, 0.15) * size, lo, size - margin)) for _ in range(2))
    theta = rng.uniform(-0.2, 0.2)
    yy, xx = np.mgrid[0:size, 0:size].astype(float)
    u = np.cos(theta) * (xx - cx) + np.sin(theta) * (yy - cy)
    v = -np.sin(theta) * (xx - cx) + np.cos(theta) * (yy - cy)
    mask = _shape_mask(label % 10, u, v, r)
    colour = rng.random(3)
    colour = np.where(np.abs(colour - img[mask].mean(0)) < 0.25, 1 - colour, colour) if mask.any() else colour
    tex = _texture(label // 10, u, v, rng)[..., None]
    img[mask] = (colour * tex)[mask]
    if cue:
        img[2:2 + _CUE, 2:2 + _CUE] = _cue_colour(label, num_classes)
    img = np.clip(img + rng.normal(0, 0.04, img.shape), 0, 1)
    ys, xs = np.nonzero(mask)
    box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    return (img * 255 + 0.5).astype(np.uint8), box


def _cue_colour(label: int, k: int) -> np.ndarray:
    hue = label / k
    return np.array([0.5 + 0.5 * np.cos(2 * np.pi * (hue + o)) for o in (0, 1 / 3, 2 / 3)])


def fingerprint(cfg: DataConfig) -> str:
    spec = {"v": 5, "seed": cfg.seed, "size": cfg.image_size, "split": cfg.split, **cfg.synthetic.model_dump()}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


def cache_root() -> Path:
    return Path(os.environ.get("CNNC_CACHE", Path.home() / ".cache" / "cnnc"))


def _render_range(args: tuple[int, int, DataConfig]) -> tuple[np.ndarray, np.ndarray]:
    start, stop, cfg = args
    syn = cfg.synthetic
    out = [render(i, i // syn.images_per_class, cfg.seed, cfg.image_size, syn.context_cue, syn.classes)
           for i in range(start, stop)]
    return np.stack([o[0] for o in out]), np.array([o[1] for o in out], np.int16)


def generate(cfg: DataConfig, out: Path, processes: int | None = None) -> Path:
    """Render the whole set (in parallel; each image depends only on its index) and pack it."""
    syn = cfg.synthetic
    n = syn.classes * syn.images_per_class
    labels = np.repeat(np.arange(syn.classes), syn.images_per_class)
    step = 250
    chunks = [(a, min(a + step, n), cfg) for a in range(0, n, step)]
    workers = min(processes or os.cpu_count() or 1, len(chunks))
    if workers > 1:
        ctx = multiprocessing.get_context("spawn")  # no fork of a process that may hold Ray threads
        with ctx.Pool(workers) as pool:
            parts = pool.map(_render_range, chunks)
    else:
        parts = [_render_range(c) for c in chunks]
    images = np.concatenate([p[0] for p in parts])
    boxes = np.concatenate([p[1] for p in parts])
    split = stratified_split(labels, cfg.split, cfg.seed)
    info = {"layout": "synthetic", "split_rule": f"stratified {list(cfg.split)} per class, seed {cfg.seed}",
            "fingerprint": fingerprint(cfg), "synthetic": syn.model_dump()}
    return write_packed(out, images, labels, split, class_names(syn.classes), boxes=boxes, info=info)


def load_synthetic(cfg: DataConfig) -> PackedDataset:
    """The cached set for this config, generated on first use."""
    base = Path(cfg.root) if cfg.root else cache_root() / "synthetic"
    out = base / f"synthetic-{fingerprint(cfg)}"
    if not is_packed(out):
        generate(cfg, out)
    return open_packed(out)
