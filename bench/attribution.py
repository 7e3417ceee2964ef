"""Part B's methods and checks on the study's 10 images, side by side in one run.

Per image, on one thread (what each Ray actor of the occlusion stage uses):

- ``<method>_s_per_image``: the map alone, for occlusion (fast path), saliency, integrated_gradients
  (``--ig-steps``) and grad_cam;
- ``faithfulness_s_per_map``: one map's deletion and insertion curves (``--steps``);
  ``faithfulness_baselines_s_per_image``: the random and centre rankings' curves;
- ``sanity_s_per_image``: the cascading randomisation check of every method (one redraw per layer).

Then the study's Part B on 2 CPUs (two actors, ``--images`` images, ``--sanity-images`` checked):
``occlusion_stage_s`` (occlusion alone, as the study ran it), ``extras_s`` (the three other methods,
every map's curves and the check) and ``extras_vs_occlusion`` (goal <= 1.0).

    python bench/attribution.py [--model exp1] [--images 10] [--sanity-images 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cnn_cluster.attribution.analyse import Settings, analyse  # noqa: E402
from cnn_cluster.config import ModelConfig  # noqa: E402
from cnn_cluster.models import build_model  # noqa: E402

MODELS = {
    "exp1": ModelConfig(conv_filters=(32, 64), fc_layers=(128,), max_pool=True, stride=1),
    "exp2": ModelConfig(conv_filters=(32, 64, 128), fc_layers=(256, 128), max_pool=True, stride=1),
}
OTHERS = ("saliency", "integrated_gradients", "grad_cam")


def per_image(model, xs, settings: Settings, sanity: bool = False) -> float:
    t0 = time.perf_counter()
    for i, x in enumerate(xs):
        analyse(model, x[None], i % 100, settings, sanity=sanity, seed=i)
    return (time.perf_counter() - t0) / len(xs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="exp1", choices=sorted(MODELS))
    ap.add_argument("--images", type=int, default=10)
    ap.add_argument("--sanity-images", type=int, default=2)
    ap.add_argument("--ig-steps", type=int, default=16)
    ap.add_argument("--steps", type=int, default=16)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build_model(MODELS[args.model], 100, 84).eval()  # random weights: the cost does not depend on them
    xs = torch.randn(args.images, 3, 84, 84)
    base = dict(ig_steps=args.ig_steps, steps=0)
    analyse(model, xs[:1], 0, Settings(methods=("occlusion", *OTHERS), steps=args.steps))  # warm-up
    t = {m: per_image(model, xs, Settings(methods=(m,), **base)) for m in ("occlusion", *OTHERS)}
    for m, s in t.items():
        print(f"{m}_s_per_image: {s:.3f}")
    one = per_image(model, xs, Settings(methods=("grad_cam",), ig_steps=args.ig_steps, steps=args.steps))
    curves = (one - t["grad_cam"]) / 3  # grad_cam's map, its curves and the two baselines': 3 rankings
    print(f"faithfulness_s_per_map: {curves:.3f}")
    print(f"faithfulness_baselines_s_per_image: {2 * curves:.3f}")
    every = Settings(methods=("occlusion", *OTHERS), ig_steps=args.ig_steps, steps=0)
    checked = args.sanity_images
    sanity = per_image(model, xs[:max(1, checked)], every, sanity=True) - sum(t.values())
    print(f"sanity_s_per_image: {sanity:.3f}  (4 methods x {sum(1 for _ in model.modules() if isinstance(_, (torch.nn.Conv2d, torch.nn.Linear)))} layers)")
    workers = 2
    occ_stage = args.images * t["occlusion"] / workers
    extras = (args.images * (sum(t[m] for m in OTHERS) + 6 * curves) + checked * sanity) / workers
    print(f"occlusion_stage_s: {occ_stage:.2f}  ({args.images} images, {workers} actors)")
    print(f"extras_s: {extras:.2f}  (3 methods, 4 maps' curves and 2 baselines per image, check on {checked})")
    print(f"extras_vs_occlusion: {extras / occ_stage:.2f}")


if __name__ == "__main__":
    main()
