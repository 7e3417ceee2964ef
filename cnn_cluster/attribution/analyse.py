"""Everything Part B computes for one image, in pure torch: each method's map, its deletion and
insertion curves against the random and centre rankings, and, where asked, the cascading
randomisation check. actors.py runs this on Ray workers; nothing here knows about Ray.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Optional

import numpy as np
import torch
from torch import nn

from . import faithfulness as faith
from .methods import all_maps
from .occlusion import fill_values
from .sanity import cascade, rank_correlation


@dataclass(frozen=True)
class Settings:
    methods: tuple[str, ...] = ("occlusion",)
    window: int = 8
    stride: int = 2
    fill: str = "mean"
    path: str = "auto"  # occlusion's fast or dense path
    precision: str = "fp32"
    grad_cam_layer: Optional[str] = None
    ig_steps: int = 16
    steps: int = 16  # faithfulness curve steps; 0: no curves
    mean: tuple = (0.0, 0.0, 0.0)
    std: tuple = (1.0, 1.0, 1.0)
    seed: int = 0

    def occlusion_kwargs(self) -> dict:
        return {"window": self.window, "stride": self.stride, "fill": self.fill, "mean": self.mean,
                "std": self.std, "method": self.path, "precision": self.precision}


@dataclass
class ImageResult:
    clean: float  # target probability of the untouched image
    shown: dict[str, np.ndarray]  # the map each method displays
    curves: dict[str, faith.Curves] = field(default_factory=dict)  # per method, and "random", "centre"
    sanity: dict[str, list[tuple[str, float]]] = field(default_factory=dict)  # method -> (layer, rho)


def analyse(model: nn.Module, x: torch.Tensor, target: int, s: Settings, sanity: bool = False,
            seed: int = 0) -> ImageResult:
    """One normalised image ``x`` (1, 3, H, W) and its target class; ``seed`` draws the random ranking."""
    model.eval()
    shown, pixels, clean = all_maps(model, x, target, s.methods, s.occlusion_kwargs(), s.grad_cam_layer,
                                    s.ig_steps)
    out = ImageResult(clean, {m: v.detach().cpu().numpy().astype(np.float32) for m, v in shown.items()})
    if s.steps:
        out.curves = _curves(model, x[0], target, pixels, s, seed)
    if sanity:
        out.sanity = _sanity(model, x, target, s)
    return out


def _curves(model: nn.Module, x: torch.Tensor, target: int, pixels: dict, s: Settings,
            seed: int) -> dict[str, faith.Curves]:
    h, w = x.shape[1:]
    fill = fill_values(x[None], s.fill, s.mean, s.std, s.window)[0]
    start = fill_values(x[None], "blur", s.mean, s.std, s.window)[0]  # RISE's insertion start
    ranks = {m: faith.rank_of(p) for m, p in pixels.items()}
    ranks["random"] = faith.random_rank(h, w, seed)
    ranks["centre"] = faith.centre_rank(h, w)
    return {m: faith.curves(model, x, target, r, fill, start, s.steps) for m, r in ranks.items()}


def _sanity(model: nn.Module, x: torch.Tensor, target: int, s: Settings) -> dict[str, list[tuple[str, float]]]:
    """The cascade, with the trained and every randomised model's maps drawn at the check's settings.

    The check compares rankings, and a coarser map keeps its ranking: occlusion's window steps by
    its own width and Integrated Gradients takes 8 path steps, so one image's check (a redraw per
    layer) costs about one occlusion map, not four (bench/attribution.py)."""
    c = replace(s, stride=s.window, ig_steps=min(s.ig_steps, 8))

    def maps(net: nn.Module) -> dict:
        shown, pixels, clean = all_maps(net, x, target, c.methods, c.occlusion_kwargs(), c.grad_cam_layer,
                                        c.ig_steps)
        if "occlusion" in shown:  # per window: its pixel reading would tie the uncovered border at 0
            pixels["occlusion"] = clean - shown["occlusion"]
        return pixels

    trained = maps(model)
    out: dict[str, list[tuple[str, float]]] = {m: [] for m in trained}
    for layer, rand in cascade(model, s.seed):
        randomised = maps(rand)
        for m in trained:
            out[m].append((layer, rank_correlation(trained[m], randomised[m])))
    return out
