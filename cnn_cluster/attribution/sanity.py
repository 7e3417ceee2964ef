"""The model-randomisation sanity check (Adebayo et al. 2018), in pure torch.

The model's layers are re-initialised one after another from the logits down (cascading); after
each, the map is drawn again and compared with the trained model's by Spearman's rank correlation
of the absolute values. A map that still looks the same once the weights it should explain are
random does not explain them.
"""

from __future__ import annotations

import copy
from typing import Iterator

import numpy as np
import torch
from scipy.stats import spearmanr
from torch import nn

_LEARNED = (nn.Conv2d, nn.Linear, nn.BatchNorm2d)


def learned_layers(model: nn.Module) -> list[str]:
    """Names of the layers with weights, logits first: the cascade's order."""
    return [name for name, m in model.named_modules() if isinstance(m, _LEARNED)][::-1]


def cascade(model: nn.Module, seed: int = 0) -> Iterator[tuple[str, nn.Module]]:
    """(layer, model with that layer and every one above it re-initialised), logits first."""
    rand = copy.deepcopy(model).eval()
    for i, name in enumerate(learned_layers(model)):
        torch.manual_seed(seed + i)  # reproducible: the same run draws the same random models
        rand.get_submodule(name).reset_parameters()
        yield name, rand


def rank_correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman's rho of two maps' absolute values; 0 where one is constant (it ranks nothing)."""
    x, y = np.abs(a.reshape(-1).double().numpy()), np.abs(b.reshape(-1).double().numpy())
    if x.std() == 0 or y.std() == 0:
        return 0.0
    return float(spearmanr(x, y).statistic)
