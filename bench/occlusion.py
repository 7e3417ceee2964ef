"""Occlusion maps of 10 84x84 images: Captum at its best vs the dense and fast paths; Ray scaling.

Prints ``name: value`` lines. Models are the study's experiment-1 and -2
architectures (random weights: the cost does not depend on them).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("CNNC_CACHE", str(Path(tempfile.gettempdir()) / "cnnc-bench-cache"))

from cnn_cluster.config import ModelConfig  # noqa: E402
from cnn_cluster.models import build_model  # noqa: E402
from cnn_cluster.attribution.occlusion import fill_values, occlusion_map, to_captum  # noqa: E402

N_IMAGES, WINDOW, STRIDE, THREADS = 10, 8, 2, 2
MODELS = {
    "exp1": ModelConfig(conv_filters=(32, 64), fc_layers=(128,), max_pool=True, stride=1),
    "exp2": ModelConfig(conv_filters=(32, 64, 128), fc_layers=(256, 128), max_pool=True, stride=1),
}


def captum(model, x, targets, ppe: int) -> tuple[torch.Tensor, float]:
    from captum.attr import Occlusion

    cl = model.to(memory_format=torch.channels_last)
    occ = Occlusion(lambda inp: torch.softmax(cl(inp.contiguous(memory_format=torch.channels_last)), 1))
    t0 = time.perf_counter()
    attr = occ.attribute(x, sliding_window_shapes=(3, WINDOW, WINDOW), strides=(3, STRIDE, STRIDE),
                         baselines=fill_values(x, "mean", (0, 0, 0), (1, 1, 1)), target=torch.tensor(targets),
                         perturbations_per_eval=ppe)
    return attr, time.perf_counter() - t0


def sharpen(model):
    """Scale the classifier so random weights give confident, varied probabilities (a real diff check)."""
    with torch.no_grad():
        model.head[-1].weight.mul_(40)
    return model


def timed(model, x, targets, method: str):
    t0 = time.perf_counter()
    res = occlusion_map(model, x, targets, window=WINDOW, stride=STRIDE, method=method)
    return res, time.perf_counter() - t0


def ray_rate(model, workers: int) -> float:
    """Images/s of the Ray stage with ``workers`` one-thread actors (80 maps, actor start-up included)."""
    from cnn_cluster.cluster import ensure_ray
    from cnn_cluster.config import DataConfig, OcclusionConfig
    from cnn_cluster.data import load_dataset
    from cnn_cluster.attribution.actors import run_occlusion

    ensure_ray(num_cpus=2)
    data = load_dataset(DataConfig(synthetic={"classes": 10, "images_per_class": 80}))
    preds = [{"index": int(i), "true": int(data.labels[i]), "pred": int(data.labels[i]), "p_true": 1.0,
              "p_pred": 1.0} for i in data.indices("test")]
    cfg = OcclusionConfig(count=80, window=WINDOW, stride=STRIDE)
    t0 = time.perf_counter()
    rows = run_occlusion(model, data, preds, cfg, "bench", workers=workers)
    return len(rows) / (time.perf_counter() - t0)


def main() -> None:
    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    x = torch.randn(N_IMAGES, 3, 84, 84)
    targets = [i % 10 for i in range(N_IMAGES)]
    for name, cfg in MODELS.items():
        model = sharpen(build_model(cfg, 100, 84).eval())
        best = min((captum(model, x, targets, ppe) + (ppe,) for ppe in (16, 32)), key=lambda r: r[1])
        dense, t_dense = timed(model, x, targets, "dense")
        fast, t_fast = timed(model, x, targets, "fast")
        mapped = torch.stack([to_captum(fast.maps[i], float(fast.clean[i]), WINDOW, STRIDE, (84, 84))
                              for i in range(N_IMAGES)])
        diff = float((best[0][:, 0].double() - mapped).abs().max())
        print(f"{name}_captum_best_s_per_image: {best[1] / N_IMAGES:.3f}  (perturbations_per_eval={best[2]})")
        print(f"{name}_dense_s_per_image: {t_dense / N_IMAGES:.3f}")
        print(f"{name}_fast_s_per_image: {t_fast / N_IMAGES:.3f}")
        print(f"{name}_speedup_vs_captum: {best[1] / t_fast:.2f}")
        print(f"{name}_max_abs_diff_vs_captum: {diff:.2e}")
        print(f"{name}_max_abs_diff_dense_vs_fast: {float((dense.maps - fast.maps).abs().max()):.2e}")
        t0 = time.perf_counter()
        half = occlusion_map(model, x, targets, window=WINDOW, stride=STRIDE, method="fast", precision="bf16")
        print(f"{name}_fast_bf16_s_per_image: {(time.perf_counter() - t0) / N_IMAGES:.3f}")
        print(f"{name}_max_abs_diff_bf16_vs_fp32: {float((half.maps - fast.maps).abs().max()):.2e}")
        if name == "exp1":
            print(f"speedup_vs_captum: {best[1] / t_fast:.2f}")
            print(f"max_abs_diff_vs_captum: {diff:.2e}")
    model = build_model(MODELS["exp1"], 10, 84).eval()
    one, two = ray_rate(model, 1), ray_rate(model, 2)
    print(f"ray_1_worker_images_per_s: {one:.2f}")
    print(f"ray_2_workers_images_per_s: {two:.2f}")
    print(f"ray_2_vs_1_workers: {two / one:.2f}")


if __name__ == "__main__":
    main()
