"""Attribution maps beside occlusion, in pure torch (no Ray): Captum's saliency, Integrated
Gradients and Grad-CAM, and occlusion's per-position map read as a per-pixel one.

Every map here is per pixel (B, H, W), larger meaning "more evidence for the target class", so
the faithfulness curves and the randomisation check treat all methods alike.
"""

from __future__ import annotations

import copy
from typing import Optional, Sequence

import torch
from torch import nn

from .occlusion import occlusion_map, to_captum

METHODS: tuple[str, ...] = ("occlusion", "saliency", "integrated_gradients", "grad_cam")


def conv_layers(model: nn.Module) -> list[str]:
    """Names of the model's Conv2d layers, input first: where Grad-CAM may look."""
    return [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def grad_cam_layer(model: nn.Module, name: Optional[str]) -> str:
    """The layer Grad-CAM reads (default: the last conv); ValueError naming the ones there are."""
    convs = conv_layers(model)
    if not convs:
        raise ValueError("the model has no Conv2d layer for Grad-CAM")
    if name is None:
        return convs[-1]
    if name not in convs:
        raise ValueError(f"the model has no conv layer {name!r} (conv layers: {', '.join(convs)})")
    return name


def _activation_of(model: nn.Module, conv: str) -> str:
    """The ReLU that follows ``conv`` in its block (Grad-CAM weighs the rectified feature maps, as
    Selvaraju et al. do); the conv itself where no ReLU follows before the next learned layer."""
    names = [(n, m) for n, m in model.named_modules() if not list(m.children())]
    at = [n for n, _ in names].index(conv)
    for name, m in names[at + 1:]:
        if isinstance(m, nn.ReLU):
            return name
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            break
    return conv


def _differentiable(model: nn.Module) -> nn.Module:
    """A copy without in-place ReLUs: Captum's layer hooks need the conv output left untouched."""
    twin = copy.deepcopy(model).eval()
    for m in twin.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
    for p in twin.parameters():
        p.requires_grad_(True)
    return twin


def gradient_maps(model: nn.Module, x: torch.Tensor, targets: Sequence[int], method: str,
                  layer: Optional[str] = None, ig_steps: int = 32,
                  baseline: Optional[torch.Tensor] = None) -> torch.Tensor:
    """(B, H, W) maps of a gradient method for normalised images ``x`` (B, 3, H, W).

    ``saliency``: the largest absolute input gradient over the colour channels (Simonyan et al.);
    ``integrated_gradients``: the path integral from ``baseline`` (default: the dataset mean, 0 after
    normalisation, the occlusion's own fill) summed over channels; ``grad_cam``: on ``layer``
    (default the last conv), ReLU'd and upsampled bilinearly to the image.
    """
    return _gradient_maps(_differentiable(model), x, targets, method, layer, ig_steps, baseline)


def _gradient_maps(net: nn.Module, x: torch.Tensor, targets: Sequence[int], method: str, layer: Optional[str],
                   ig_steps: int, baseline: Optional[torch.Tensor] = None) -> torch.Tensor:
    """gradient_maps on a model ``_differentiable`` made already (one copy serves every method)."""
    from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam, Saliency

    x = x.detach().float().clone().requires_grad_(True)
    target = [int(t) for t in targets]
    if method == "saliency":
        return Saliency(net).attribute(x, target=target, abs=True).amax(1).detach()
    if method == "integrated_gradients":
        base = torch.zeros_like(x) if baseline is None else baseline.to(x)
        attr = IntegratedGradients(net).attribute(x, baselines=base, target=target, n_steps=ig_steps,
                                                  internal_batch_size=ig_steps)
        return attr.sum(1).detach()
    if method == "grad_cam":
        module = net.get_submodule(_activation_of(net, grad_cam_layer(net, layer)))
        cam = LayerGradCam(net, module).attribute(x, target=target, relu_attributions=True)
        return LayerAttribution.interpolate(cam, tuple(x.shape[2:]), "bilinear")[:, 0].detach()
    raise ValueError(f"method must be one of {', '.join(METHODS)} (got {method!r})")


def occlusion_pixels(pmap: torch.Tensor, clean: float, window: int, stride: int,
                     size: tuple[int, int]) -> torch.Tensor:
    """Occlusion's per-position probabilities as a per-pixel drop (Captum's reading)."""
    return to_captum(pmap, clean, window, stride, size).float()


def all_maps(model: nn.Module, x: torch.Tensor, target: int, methods: Sequence[str], occ: dict,
             layer: Optional[str] = None, ig_steps: int = 32) -> tuple[dict, dict, float]:
    """One image (1, 3, H, W): ``(display maps, per-pixel maps, clean probability)`` per method.

    The display map of occlusion is its per-position grid (the study's heatmap); the other
    methods display their per-pixel map. ``occ``: occlusion_map's keyword arguments.
    """
    shown, pixels = {}, {}
    if "occlusion" in methods:
        res = occlusion_map(model, x, [target], **occ)
        clean = float(res.clean[0])
        shown["occlusion"] = res.maps[0]
        pixels["occlusion"] = occlusion_pixels(res.maps[0], clean, occ["window"], occ["stride"],
                                               tuple(x.shape[2:]))
    else:
        with torch.no_grad():
            clean = float(torch.softmax(model(x).float(), 1)[0, target])
    grads = [m for m in methods if m != "occlusion"]
    net = _differentiable(model) if grads else None
    for m in grads:
        pixels[m] = shown[m] = _gradient_maps(net, x, [target], m, layer, ig_steps)[0]
    return shown, pixels, clean
