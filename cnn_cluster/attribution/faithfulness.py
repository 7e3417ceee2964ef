"""Whether a map names the pixels the model needs (Petsiuk et al. 2018, RISE): deletion and
insertion curves, in pure torch.

Pixels are ranked by the map, first the most important. Deletion puts the first k of them into the
fill value, insertion copies them onto a blurred image; the target class's probability after each
step gives the curve, and its area (AUC, over the fraction of pixels changed) the score: a faithful
map has a low deletion AUC and a high insertion AUC. The same curves for a random ranking and
for a centre-first one (photographs put their objects in the middle) are the bars a map must clear.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class Curves:
    deletion: np.ndarray  # (steps + 1,) target probability after removing each share of pixels
    insertion: np.ndarray  # (steps + 1,) after adding them onto the start image

    @property
    def deletion_auc(self) -> float:
        return auc(self.deletion)

    @property
    def insertion_auc(self) -> float:
        return auc(self.insertion)


def auc(curve: np.ndarray) -> float:
    """Trapezoid area under a curve sampled at equal steps from 0 to 1."""
    c = np.asarray(curve, np.float64)
    return float(((c[:-1] + c[1:]) / 2).mean()) if len(c) > 1 else float(c[0])


def rank_of(score: torch.Tensor) -> torch.Tensor:
    """Each pixel's place in the ranking, 0 first (the highest score); ties in reading order."""
    order = torch.argsort(score.reshape(-1).float(), descending=True, stable=True)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order), device=order.device)
    return rank


def random_rank(h: int, w: int, seed: int) -> torch.Tensor:
    return torch.randperm(h * w, generator=torch.Generator().manual_seed(seed))


def centre_rank(h: int, w: int) -> torch.Tensor:
    """The prior a map must beat: pixels nearest the image centre first."""
    ys, xs = torch.meshgrid(torch.arange(h) - (h - 1) / 2, torch.arange(w) - (w - 1) / 2, indexing="ij")
    return rank_of(-(ys ** 2 + xs ** 2))


@torch.no_grad()
def curves(model: nn.Module, x: torch.Tensor, target: int, rank: torch.Tensor, fill: torch.Tensor,
           start: torch.Tensor, steps: int = 16) -> Curves:
    """Deletion and insertion curves of one normalised image ``x`` (3, H, W) for a pixel ranking.

    ``fill``: what deleted pixels become; ``start``: the image insertion starts from. All steps go
    through the model as one batch of 2 * (steps + 1) images.
    """
    _, h, w = x.shape
    counts = torch.round(torch.linspace(0, h * w, steps + 1)).long()
    mask = (rank.to(x.device)[None, :] < counts[:, None].to(x.device)).view(steps + 1, 1, h, w)
    deleted = torch.where(mask, fill, x)
    inserted = torch.where(mask, x, start)
    batch = torch.cat([deleted, inserted]).contiguous(memory_format=torch.channels_last)
    probs = F.softmax(model(batch).float(), 1)[:, target].cpu().numpy()
    return Curves(probs[:steps + 1], probs[steps + 1:])
