"""The configurable CNN of the study, and its shape / parameter / FLOP arithmetic.

Per conv layer: Conv2d(k, stride s, same padding) -> [BatchNorm] -> ReLU ->
[MaxPool 2x2]; then flatten, FC layers with ReLU [and dropout], and a linear
classifier. No Ray in here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .config import Experiment, ModelConfig
from .errors import ConfigError


@dataclass(frozen=True)
class Shapes:
    """What one architecture does to an image: per-layer maps, size and cost."""

    feature_maps: tuple[tuple[int, int, int], ...]  # (C, H, W) after each conv block
    flat: int  # inputs of the first FC layer
    params: int
    flops: int  # forward FLOPs per image, multiply and add counted separately


def _conv_out(size: int, k: int, s: int) -> int:
    return (size + 2 * (k // 2) - k) // s + 1


def shapes(cfg: ModelConfig, image_size: int, num_classes: int, batch_norm: bool = False) -> Shapes:
    """Shapes, parameters and FLOPs; raises ConfigError naming the layer that shrinks below 1x1."""
    k, s = cfg.kernel_size, cfg.stride
    c_in, size, params, flops, maps = 3, image_size, 0, 0, []
    for i, c_out in enumerate(cfg.conv_filters, start=1):
        out = _conv_out(size, k, s)
        if out < 1:
            raise ConfigError(f"conv layer {i}: a {size}x{size} input with kernel {k}, stride {s} "
                              "gives a feature map below 1x1; use fewer layers, stride 1 or a larger image")
        params += c_in * c_out * k * k + c_out + (2 * c_out if batch_norm else 0)
        flops += 2 * c_in * c_out * k * k * out * out
        if cfg.max_pool:
            if out < 2:
                raise ConfigError(f"conv layer {i}: max pooling a {out}x{out} map gives a feature map below "
                                  "1x1; drop max_pool, use fewer conv layers or stride 1")
            out //= 2
        c_in, size = c_out, out
        maps.append((c_out, out, out))
    flat = c_in * size * size
    for n_in, n_out in zip((flat, *cfg.fc_layers), (*cfg.fc_layers, num_classes)):
        params += n_in * n_out + n_out
        flops += 2 * n_in * n_out
    return Shapes(tuple(maps), flat, params, flops)


class CNN(nn.Module):
    """``features`` (conv blocks) then ``head`` (flatten, FC layers, classifier)."""

    def __init__(self, cfg: ModelConfig, num_classes: int, image_size: int = 84,
                 batch_norm: bool = False, dropout: float = 0.0):
        super().__init__()
        self.shapes = shapes(cfg, image_size, num_classes, batch_norm)
        layers: list[nn.Module] = []
        c_in = 3
        for c_out in cfg.conv_filters:
            k = cfg.kernel_size
            layers.append(nn.Conv2d(c_in, c_out, k, stride=cfg.stride, padding=k // 2))
            if batch_norm:
                layers.append(nn.BatchNorm2d(c_out))
            layers.append(nn.ReLU(inplace=True))
            if cfg.max_pool:
                layers.append(nn.MaxPool2d(2))
            c_in = c_out
        self.features = nn.Sequential(*layers)
        head: list[nn.Module] = [nn.Flatten()]
        n_in = self.shapes.flat
        for n_out in cfg.fc_layers:
            if dropout > 0:
                head.append(nn.Dropout(dropout))
            head += [nn.Linear(n_in, n_out), nn.ReLU(inplace=True)]
            n_in = n_out
        if dropout > 0 and cfg.fc_layers:
            head.append(nn.Dropout(dropout))
        head.append(nn.Linear(n_in, num_classes))
        self.head = nn.Sequential(*head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def experiment_shapes(exps: list[Experiment], image_size: int, num_classes: int) -> list[Shapes]:
    """Each experiment's shapes; the first that cannot be built raises naming ``experiments.<i>``
    (the one check ``cnnc validate`` and a submission share)."""
    out = []
    for i, exp in enumerate(exps):
        try:
            out.append(shapes(exp.model, image_size, num_classes, exp.train.batch_norm))
        except ConfigError as exc:
            raise ConfigError(f"experiments.{i} ({exp.name}): {exc}") from None
    return out


def build_model(spec: Experiment | ModelConfig, num_classes: int, image_size: int) -> CNN:
    """The one way to build the study's CNN: from an experiment (its model fields, and the train
    fields that change the network: batch_norm, dropout), or from bare model fields (neither)."""
    if isinstance(spec, Experiment):
        return CNN(spec.model, num_classes, image_size, spec.train.batch_norm, spec.train.dropout)
    return CNN(spec, num_classes, image_size)


def load_trained(path, num_classes: int, image_size: int) -> tuple[CNN, Experiment]:
    """A trial's saved best weights (``checkpoints/<trial>.pt``), in eval mode.

    Loaded with ``weights_only=True``: a checkpoint cannot run code. A checkpoint
    whose weights do not fit the recipe saved with it is refused in one line.
    """
    from pathlib import Path

    path = Path(path)
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        exp = Experiment.model_validate(saved["experiment"])
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such checkpoint") from None
    except Exception as exc:  # noqa: BLE001 - any unreadable or unsafe file gets the same answer
        raise ConfigError(f"{path}: not a cnnc checkpoint or unsafe to load ({type(exc).__name__})") from None
    model = build_model(exp, num_classes, image_size)
    try:
        model.load_state_dict(saved["model"])
    except (RuntimeError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0][:160]
        raise ConfigError(f"{path}: weights do not match the architecture of '{exp.name}' ({first})") from None
    return model.eval(), exp
