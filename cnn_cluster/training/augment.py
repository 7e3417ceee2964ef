"""Training-time augmentation of a whole batch at once: no Python loop per image.

Every function takes a normalised float NCHW batch (``step.to_input``) and the trial's
``torch.Generator``, so a rank's draws repeat for the same seed and epoch. Mixup and CutMix are
torchvision's own (``transforms.v2``); they draw from torch's global generator, which the training
loop seeds per epoch. No Ray in here.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..config import TrainConfig


def flip_crop(x: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random horizontal flip and pad-``pad`` random crop, per image (the CIFAR recipe), in one gather:
    each output pixel reads its source pixel of the zero-padded (mean after normalisation) batch.
    ``pad=0``: the flip alone."""
    b, c, h, w = x.shape
    flip = torch.rand(b, generator=generator) < 0.5
    x = torch.where(flip.view(b, 1, 1, 1).to(x.device), x.flip(3), x)
    padded = F.pad(x, (pad, pad, pad, pad)).flatten(2)  # (b, c, (h + 2 pad) * (w + 2 pad))
    offs = torch.randint(0, 2 * pad + 1, (b, 2), generator=generator).to(x.device)
    rows = offs[:, :1, None] + torch.arange(h, device=x.device)[None, :, None]  # (b, h, 1)
    cols = offs[:, 1:, None] + torch.arange(w, device=x.device)[None, None, :]  # (b, 1, w)
    index = (rows * (w + 2 * pad) + cols).view(b, 1, h * w).expand(b, c, h * w)
    out = padded.gather(2, index).view(b, c, h, w)
    return out.contiguous(memory_format=torch.channels_last)


def crop_boxes(b: int, generator: torch.Generator, scale: tuple[float, float],
               ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> torch.Tensor:
    """Per image (width, height, centre x, centre y) of a random crop, as fractions of the image side
    (centre in [-1, 1] coordinates): area uniform in ``scale``, aspect ratio log-uniform in ``ratio``
    (torchvision's RandomResizedCrop draws). A side longer than the image is cut to the image,
    where torchvision redraws up to ten times; the crop then always lies inside the image."""
    area = scale[0] + (scale[1] - scale[0]) * torch.rand(b, generator=generator)
    log_r = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * torch.rand(b, generator=generator)
    w = (area * log_r.exp()).sqrt().clamp(max=1.0)
    h = (area / log_r.exp()).sqrt().clamp(max=1.0)
    cx = (2 * torch.rand(b, generator=generator) - 1) * (1 - w)
    cy = (2 * torch.rand(b, generator=generator) - 1) * (1 - h)
    return torch.stack([w, h, cx, cy], 1)


def resized_crop(x: torch.Tensor, generator: torch.Generator, scale: tuple[float, float]) -> torch.Tensor:
    """Random horizontal flip and random-resized crop (Inception-style, resized back to the input's
    size with bilinear sampling), the whole batch in one ``grid_sample``."""
    b = x.shape[0]
    w, h, cx, cy = crop_boxes(b, generator, scale).to(x.device).unbind(1)
    flip = torch.where(torch.rand(b, generator=generator).to(x.device) < 0.5, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0], theta[:, 0, 2] = w * flip, cx  # a negative x scale mirrors the crop
    theta[:, 1, 1], theta[:, 1, 2] = h, cy
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.contiguous(memory_format=torch.channels_last)


def color_jitter(x: torch.Tensor, generator: torch.Generator, strength: float, mean: torch.Tensor,
                 std: torch.Tensor) -> torch.Tensor:
    """Brightness, contrast and saturation, each scaled by a factor uniform in [1 - s, 1 + s] per image
    (torchvision's ColorJitter factors and formulas, in that order), on the pixels in [0, 1].

    The three steps are linear in the pixel, so they compose into one 3x3 colour matrix and offset per
    image, applied in normalised space with one batched matrix product; the result is clamped to the
    pixel range once, where torchvision clamps after each step (the two differ only where a step
    overshoots the range)."""
    b = x.shape[0]
    dev, dt = x.device, x.dtype
    fb, fc, fs = (1 + strength * (2 * torch.rand(3, b, generator=generator) - 1)).to(dev, dt)
    luma = torch.tensor([0.299, 0.587, 0.114], device=dev, dtype=dt)  # ITU-R 601, as rgb_to_grayscale
    m, s = mean.view(3), std.view(3)
    gray_mean = fb * ((x.mean((2, 3)) * s + m) @ luma)  # contrast's pivot: the brightened image's mean gray
    eye = torch.eye(3, device=dev, dtype=dt)
    colour = (fb * fc)[:, None, None] * (fs[:, None, None] * eye + (1 - fs)[:, None, None] * luma)  # (b, 3, 3)
    offset = ((1 - fc) * gray_mean)[:, None].expand(b, 3)
    # pixels p = x * std + mean; out = (colour @ p + offset - mean) / std, folded into x's own space
    colour_n = colour * s[None, None, :] / s[None, :, None]
    offset_n = ((colour @ m) + offset - m) / s
    h, w = x.shape[2:]
    flat = x.permute(0, 2, 3, 1).reshape(b, h * w, 3)  # a view of channels_last memory
    out = torch.baddbmm(offset_n[:, None, :], flat, colour_n.transpose(1, 2))
    out = torch.clamp(out, min=-m / s, max=(1 - m) / s)  # the pixel range [0, 1]
    return out.view(b, h, w, 3).permute(0, 3, 1, 2)


def geometric(x: torch.Tensor, generator: torch.Generator, cfg: TrainConfig) -> torch.Tensor:
    """The recipe's ``augmentation``: none, mirror, mirror + pad-4 crop, or mirror + resized crop."""
    if cfg.augmentation == "resized_crop":
        return resized_crop(x, generator, cfg.crop_scale)
    if cfg.augmentation in ("flip", "flip_crop"):
        return flip_crop(x, generator, pad=4 if cfg.augmentation == "flip_crop" else 0)
    return x


def batch_mixer(cfg: TrainConfig, num_classes: int) -> Optional[nn.Module]:
    """torchvision's MixUp and/or CutMix for the recipe (one of the two per batch when both are on),
    or None. They turn the labels into soft targets that the cross-entropy takes as they are."""
    from torchvision.transforms import v2

    mixers = []
    if cfg.mixup > 0:
        mixers.append(v2.MixUp(alpha=cfg.mixup, num_classes=num_classes))
    if cfg.cutmix > 0:
        mixers.append(v2.CutMix(alpha=cfg.cutmix, num_classes=num_classes))
    if not mixers:
        return None
    return mixers[0] if len(mixers) == 1 else v2.RandomChoice(mixers)
