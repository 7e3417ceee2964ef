"""Part B's settings checked against the images and the models before any work starts (no Ray):
each refusal is one line naming the field."""

from __future__ import annotations

from torch import nn

from ..config import OcclusionConfig
from ..errors import CnncError
from .methods import grad_cam_layer
from .occlusion import grid_size


def check_window(cfg: OcclusionConfig, image_size: int) -> None:
    """Refuse a window or stride that does not fit the images, naming the fields."""
    try:
        grid_size(image_size, cfg.window, cfg.stride)
    except ValueError as exc:
        raise CnncError(f"occlusion.window/stride: {exc}") from None


def check_methods(cfg: OcclusionConfig, model: nn.Module) -> None:
    """Refuse a Grad-CAM layer the model does not have, naming the field and the layers there are."""
    if "grad_cam" in cfg.methods:
        try:
            grad_cam_layer(model, cfg.grad_cam_layer)
        except ValueError as exc:
            raise CnncError(f"occlusion.grad_cam_layer: {exc}") from None


def check_occlusion(cfg: OcclusionConfig, exps: list, image_size: int, num_classes: int) -> None:
    """Every setting against the images and every experiment's model (the best is not known yet)."""
    from ..models import build_model

    check_window(cfg, image_size)
    for exp in exps:
        try:
            check_methods(cfg, build_model(exp, num_classes, image_size))
        except CnncError as exc:
            raise CnncError(f"{exc} (experiment {exp.name})") from None
