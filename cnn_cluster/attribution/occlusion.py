"""Occlusion sensitivity maps, in pure torch (no Ray in here).

An NxN window of a fill value slides over the image with stride S; at each
position the softmax probability of the target class is recorded, giving a map
of shape ((H - N) // S + 1, (W - N) // S + 1).

Two implementations give the same numbers:

- ``dense``: every occluded copy goes through the whole model, in batches small
  enough to stay in cache. The reference.
- ``fast``: for models that start with Conv2d / BatchNorm2d (eval) / ReLU / MaxPool2d
  layers (a ``features`` Sequential and a ``head``, like the study's CNN, or a plain
  ``nn.Sequential`` up to its first Flatten or Linear), an occlusion changes only a
  bounded tile of each layer's output. The
  tile of the last feature map is chosen to cover that change; walking back,
  each layer's tile is exactly the receptive field of the next, so every value is
  recomputed from exact inputs. The clean feature map, with the recomputed tile
  pasted in, then goes through the head.

``method="auto"`` (the default) takes the fast path where the model allows it, else dense.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

FILLS: tuple[str, ...] = ("mean", "gray", "zero", "blur")


@dataclass
class OcclusionMaps:
    maps: torch.Tensor  # (B, H', W'): target-class probability with the window at each position
    clean: torch.Tensor  # (B,): target-class probability of the unoccluded image


def grid_size(size: int, window: int, stride: int) -> int:
    """Window positions along one axis; raises ValueError when the window does not fit."""
    if window < 1 or stride < 1:
        raise ValueError(f"window ({window}) and stride ({stride}) must be >= 1")
    if window > size:
        raise ValueError(f"occlusion window {window} is larger than the {size}-pixel image")
    if stride > size - window + 1 and size != window:
        raise ValueError(f"occlusion stride {stride} leaves a single window position on a {size}-pixel image; "
                         f"use a stride <= {size - window}")
    return (size - window) // stride + 1


def fill_values(images: torch.Tensor, fill: str, mean: Sequence[float], std: Sequence[float],
                window: int = 8) -> torch.Tensor:
    """What an occluded pixel becomes, in the normalised space the model sees, shaped like ``images``."""
    if fill not in FILLS:
        raise ValueError(f"fill must be one of {', '.join(FILLS)} (got {fill!r})")
    m = torch.tensor(mean, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    if fill == "mean":  # the dataset mean: 0 after normalisation, the study's neutral gray
        return torch.zeros_like(images)
    if fill == "gray":
        return ((0.5 - m) / s).expand_as(images).contiguous()
    if fill == "zero":
        return ((0.0 - m) / s).expand_as(images).contiguous()
    from torchvision.transforms.functional import gaussian_blur

    return gaussian_blur(images, kernel_size=2 * window + 1, sigma=window / 2)


@torch.no_grad()
def occlusion_map(model: nn.Module, images: torch.Tensor, targets: Sequence[int], window: int = 8,
                  stride: int = 2, fill: str = "mean", mean: Sequence[float] = (0.0, 0.0, 0.0),
                  std: Sequence[float] = (1.0, 1.0, 1.0), method: str = "auto", batch: Optional[int] = None,
                  precision: str = "fp32") -> OcclusionMaps:
    """Per-position target-class probabilities for normalised ``images`` (B, 3, H, W).

    ``method``: ``auto`` (fast where the model allows it, else dense), ``fast`` (raises naming the
    layer it cannot handle) or ``dense``. ``precision`` bf16 autocasts the forward passes (fp32, the
    default, keeps the maps exact against Captum; docs/performance.md measures the difference).
    """
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be fp32 or bf16 (got {precision!r})")
    if precision == "bf16":
        with torch.autocast(images.device.type, dtype=torch.bfloat16):
            return occlusion_map(model, images, targets, window, stride, fill, mean, std, method, batch)
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
    h = grid_size(images.shape[2], window, stride)
    w = grid_size(images.shape[3], window, stride)
    if method not in ("auto", "fast", "dense"):
        raise ValueError(f"method must be auto, fast or dense (got {method!r})")
    method = resolve_method(model, method)
    model.eval()
    fills = fill_values(images, fill, mean, std, window)
    clean = F.softmax(model(images).float(), 1)
    targets = [int(t) for t in targets]
    out = torch.empty(len(images), h, w)
    if method == "fast":
        plan = _TilePlan(model, images.shape[2], images.shape[3], window, stride)
        for i, (x, f, t) in enumerate(zip(images, fills, targets)):
            out[i] = plan.run(x, f, t, batch or 128).view(h, w)
    else:
        for i, (x, f, t) in enumerate(zip(images, fills, targets)):
            out[i] = _dense_one(model, x, f, t, window, stride, h, w, batch or 32).view(h, w)
    return OcclusionMaps(out, clean[torch.arange(len(targets)), targets].cpu())


def _starts(h: int, w: int, stride: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    ys = torch.arange(h, device=device).repeat_interleave(w) * stride
    xs = torch.arange(w, device=device).repeat(h) * stride
    return ys, xs


def _window_mask(ys: torch.Tensor, xs: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor,
                 window: int) -> torch.Tensor:
    """(P, 1, R, C) True where pixel (rows[p, r], cols[p, c]) lies under window p."""
    in_r = (rows >= ys[:, None]) & (rows < ys[:, None] + window)
    in_c = (cols >= xs[:, None]) & (cols < xs[:, None] + window)
    return (in_r[:, :, None] & in_c[:, None, :])[:, None]


def _dense_one(model: nn.Module, x: torch.Tensor, fill: torch.Tensor, target: int, window: int, stride: int,
               h: int, w: int, batch: int) -> torch.Tensor:
    ys, xs = _starts(h, w, stride, x.device)
    rows = torch.arange(x.shape[1], device=x.device).expand(len(ys), -1)
    cols = torch.arange(x.shape[2], device=x.device).expand(len(xs), -1)
    out = []
    for a in range(0, len(ys), batch):
        mask = _window_mask(ys[a:a + batch], xs[a:a + batch], rows[a:a + batch], cols[a:a + batch], window)
        xb = torch.where(mask, fill, x).contiguous(memory_format=torch.channels_last)
        out.append(F.softmax(model(xb).float(), 1)[:, target].cpu())
    return torch.cat(out)


# --------------------------------------------------------------------------- fast path

_ELEMENTWISE = (nn.ReLU, nn.BatchNorm2d, nn.Identity)


def split_model(model: nn.Module) -> tuple[list[nn.Module], nn.Module]:
    """The model as (tiled layers, head) for the fast path; ValueError naming what it cannot handle.

    The study's CNN: its ``features`` and ``head``. A plain ``nn.Sequential``: its layers up to the
    first Flatten or Linear, and the rest as the head.
    """
    features, head = getattr(model, "features", None), getattr(model, "head", None)
    if isinstance(features, nn.Sequential) and isinstance(head, nn.Module):
        named = [(f"features.{i}", m) for i, m in enumerate(features)]
    elif isinstance(model, nn.Sequential):
        cut = next((i for i, m in enumerate(model) if isinstance(m, (nn.Flatten, nn.Linear))), len(model))
        named, head = [(str(i), m) for i, m in enumerate(model)][:cut], model[cut:]
    else:
        raise ValueError(f"the fast occlusion path needs an nn.Sequential or a model with features and head, "
                         f"not {type(model).__name__}; use method='dense' or 'auto'")
    for name, m in named:
        if _geometry(m) is None:
            raise ValueError(f"the fast occlusion path cannot handle layer {name} ({m!r}); it takes "
                             f"Conv2d/BatchNorm2d/ReLU/MaxPool2d before the head; use method='dense' or 'auto'")
    if not named:
        raise ValueError("the fast occlusion path needs at least one Conv2d/ReLU/MaxPool2d layer before the head; "
                         "use method='dense' or 'auto'")
    return [m for _, m in named], head


def resolve_method(model: nn.Module, method: str) -> str:
    """``auto`` becomes fast where the model can be tiled, else dense; others stay as they are."""
    return method if method != "auto" else "fast" if supports_fast(model) else "dense"


def supports_fast(model: nn.Module) -> bool:
    try:
        split_model(model)
    except ValueError:
        return False
    return True


def _geometry(m: nn.Module) -> Optional[tuple[int, int, int]]:
    """(kernel, stride, padding) along one axis, or None for an unsupported layer."""
    if isinstance(m, nn.Conv2d):
        square = m.kernel_size[0] == m.kernel_size[1] and m.stride[0] == m.stride[1]
        if not square or m.groups != 1 or m.dilation != (1, 1) or m.padding_mode != "zeros" \
                or not isinstance(m.padding, tuple) or m.padding[0] != m.padding[1]:
            return None
        return m.kernel_size[0], m.stride[0], m.padding[0]
    if isinstance(m, nn.MaxPool2d):
        k, s = m.kernel_size, m.stride
        if not isinstance(k, int) or not isinstance(s, int) or m.padding != 0 or m.dilation != 1 or m.ceil_mode:
            return None
        return k, s, 0
    if isinstance(m, _ELEMENTWISE):
        return 1, 1, 0
    return None


class _Axis:
    """Tile starts and sizes for every layer along one axis, for every window position."""

    def __init__(self, geoms: list[tuple[int, int, int]], sizes: list[int], window: int, stride: int, n: int):
        starts = np.arange(n) * stride
        lo, hi = starts.copy(), starts + window  # affected interval, per position
        for (k, s, p), size in zip(geoms, sizes[1:]):
            lo = np.clip(-((-(lo + p - k + 1)) // s), 0, size)  # ceil division
            hi = np.clip((hi - 1 + p) // s + 1, 0, size)
        last = sizes[-1]
        tile = int(min(last, max(1, (hi - lo).max())))
        start = np.clip(np.minimum(lo, last - tile), 0, None)
        self.starts, self.sizes = [start], [tile]
        for k, s, p in reversed(geoms):  # each layer's input tile is the receptive field of its output tile
            start = start * s - p
            tile = (tile - 1) * s + k
            self.starts.insert(0, start)
            self.sizes.insert(0, tile)


class _TilePlan:
    """Precomputed tiles of one model at one image size, window and stride."""

    def __init__(self, model: nn.Module, height: int, width: int, window: int, stride: int):
        self.layers, self.head = split_model(model)
        self.model, self.window, self.stride = model, window, stride
        geoms = [_geometry(m) for m in self.layers]
        hs, ws = self._sizes(height, width)
        self.h, self.w = grid_size(height, window, stride), grid_size(width, window, stride)
        self.rows = _Axis(geoms, hs, window, stride, self.h)
        self.cols = _Axis(geoms, ws, window, stride, self.w)
        self.hs, self.ws = hs, ws

    def _sizes(self, height: int, width: int) -> tuple[list[int], list[int]]:
        x = torch.zeros(1, 3, height, width, device=next(self.model.parameters()).device)
        hs, ws = [height], [width]
        for m in self.layers:
            x = m(x)
            hs.append(x.shape[2])
            ws.append(x.shape[3])
        return hs, ws

    def run(self, x: torch.Tensor, fill: torch.Tensor, target: int, batch: int) -> torch.Tensor:
        """Target probabilities for every position of one image (flattened row-major)."""
        feats = x[None]
        for m in self.layers:
            feats = m(feats)
        ri = torch.arange(self.h).repeat_interleave(self.w)
        ci = torch.arange(self.w).repeat(self.h)
        out = [self._batch(x, fill, feats, ri[a:a + batch], ci[a:a + batch], target)
               for a in range(0, len(ri), batch)]
        return torch.cat(out)

    def _coords(self, axis: _Axis, layer: int, idx: torch.Tensor, device: torch.device) -> torch.Tensor:
        start = torch.as_tensor(axis.starts[layer], device=device)[idx]
        return start[:, None] + torch.arange(axis.sizes[layer], device=device)

    def _batch(self, x: torch.Tensor, fill: torch.Tensor, feats: torch.Tensor, ri: torch.Tensor,
               ci: torch.Tensor, target: int) -> torch.Tensor:
        dev = x.device
        rows, cols = self._coords(self.rows, 0, ri, dev), self._coords(self.cols, 0, ci, dev)
        tile = _gather(x, rows, cols)
        mask = _window_mask(ri.to(dev) * self.stride, ci.to(dev) * self.stride, rows, cols, self.window)
        tile = torch.where(mask, _gather(fill, rows, cols), tile)
        for i, m in enumerate(self.layers):
            if isinstance(m, nn.Conv2d):  # zero the tile outside the map: the conv's own padding
                rows, cols = self._coords(self.rows, i, ri, dev), self._coords(self.cols, i, ci, dev)
                inside = ((rows >= 0) & (rows < self.hs[i]))[:, None, :, None] & \
                         ((cols >= 0) & (cols < self.ws[i]))[:, None, None, :]
                tile = F.conv2d(tile * inside, m.weight, m.bias, stride=m.stride)
            elif isinstance(m, nn.MaxPool2d):
                tile = F.max_pool2d(tile, m.kernel_size, m.stride)
            else:
                tile = m(tile)
        rows, cols = self._coords(self.rows, -1, ri, dev), self._coords(self.cols, -1, ci, dev)
        full = feats.expand(len(ri), -1, -1, -1).clone()
        p = torch.arange(len(ri), device=dev)[:, None, None, None]
        c = torch.arange(full.shape[1], device=dev)[None, :, None, None]
        full[p, c, rows[:, None, :, None], cols[:, None, None, :]] = tile
        return F.softmax(self.head(full).float(), 1)[:, target].cpu()


def _gather(img: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """(P, C, R, Cn) tiles of a (C, H, W) image at per-position coordinates; zeros outside."""
    _, h, w = img.shape
    pad = int(max(0, -rows.min(), -cols.min(), rows.max() - h + 1, cols.max() - w + 1))
    padded = F.pad(img, (pad, pad, pad, pad)) if pad else img
    r, c = rows + pad, cols + pad
    return padded[:, r[:, :, None], c[:, None, :]].permute(1, 0, 2, 3)


# --------------------------------------------------------------------------- reading a map


def to_captum(pmap: torch.Tensor, clean: float, window: int, stride: int, size: tuple[int, int]) -> torch.Tensor:
    """Captum's per-pixel attribution from a per-position map: clean minus the mean over covering windows."""
    ones = torch.ones(1, 1, window, window, dtype=torch.float64)
    p = pmap.double()[None, None]
    total = F.conv_transpose2d(p, ones, stride=stride)
    count = F.conv_transpose2d(torch.ones_like(p), ones, stride=stride)
    total = F.pad(total, (0, size[1] - total.shape[3], 0, size[0] - total.shape[2]))
    count = F.pad(count, (0, size[1] - count.shape[3], 0, size[0] - count.shape[2]))
    return (clean - total / count.clamp_min(1))[0, 0] * (count[0, 0] > 0)


def box_scores(pmap: np.ndarray, clean: float, box: Sequence[int], window: int, stride: int) -> dict:
    """Object vs context for one map: where the confidence drops, against where the object is.

    ``object_share``: share of the total drop on windows centred inside the box;
    ``box_share``: share of window centres inside the box (what an indifferent
    model would score); ``pointing``: the largest drop lies inside the box.
    """
    h, w = pmap.shape
    cy = np.arange(h) * stride + (window - 1) / 2
    cx = np.arange(w) * stride + (window - 1) / 2
    x0, y0, x1, y1 = box
    inside = ((cy >= y0) & (cy < y1))[:, None] & ((cx >= x0) & (cx < x1))[None, :]
    drop = np.clip(clean - pmap, 0, None)
    total = float(drop.sum())
    iy, ix = np.unravel_index(int(np.argmin(pmap)), pmap.shape)
    return {
        "object_share": float(drop[inside].sum() / total) if total > 0 else float("nan"),
        "box_share": float(inside.mean()),
        "pointing": bool(inside[iy, ix]),
    }


# --------------------------------------------------------------------------- which images


def select_images(preds: list[dict], count: int, how: str = "random", seed: int = 0,
                  misclassified: int = 0) -> list[tuple[dict, list[tuple[int, str]]]]:
    """Test predictions to map, each with its (target class, kind) pairs.

    Correctly classified images (``count``, chosen ``random``, most ``confident``
    or round-robin ``per_class``) get the map of their true class; the most
    confident errors (``misclassified``) get maps of the true and the predicted class.
    """
    right = sorted((p for p in preds if p["pred"] == p["true"]), key=lambda p: p["index"])
    if how == "random":
        rng = np.random.default_rng(seed)
        picked = [right[i] for i in sorted(rng.choice(len(right), min(count, len(right)), replace=False))]
    elif how == "confident":
        picked = sorted(right, key=lambda p: (-p["p_true"], p["index"]))[:count]
    elif how == "per_class":
        picked = _round_robin(right, count)
    else:
        raise ValueError(f"select must be random, confident or per_class (got {how!r})")
    wrong = sorted((p for p in preds if p["pred"] != p["true"]), key=lambda p: (-p["p_pred"], p["index"]))
    out = [(p, [(p["true"], "true")]) for p in picked]
    out += [(p, [(p["true"], "true"), (p["pred"], "predicted")]) for p in wrong[:misclassified]]
    return out


def _round_robin(right: list[dict], count: int) -> list[dict]:
    by_class: dict[int, list[dict]] = {}
    for p in sorted(right, key=lambda p: (-p["p_true"], p["index"])):
        by_class.setdefault(p["true"], []).append(p)
    picked: list[dict] = []
    while len(picked) < count and any(by_class.values()):
        for c in sorted(by_class):
            if by_class[c] and len(picked) < count:
                picked.append(by_class[c].pop(0))
    return picked
