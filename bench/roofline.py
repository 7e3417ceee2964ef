"""Training speed against the machine's measured peak: matmul peaks, the study's model steps in fp32
and bf16, the project's own epoch loop against a plain step, and torch.compile.

All side by side in one run (batch 128, 84x84, channels_last, AdamW):

- ``matmul_{fp32,bf16}_{1,all}_threads_gflops``: a 2048^3 matmul, one thread and all threads;
- ``<exp>_{fp32,bf16}_images_per_s`` and ``..._peak_fraction``: a plain step (forward, backward,
  optimizer) of each study model on random data; FLOPs per image counted as 3 x forward;
- ``exp1_bf16_vs_fp32`` (goal >= 1.8 where the CPU computes bf16 natively);
- ``pipeline_efficiency_{plain,improved}``: ``training.step.train_epoch`` (gather, normalise, augment,
  step) over the plain step of the same model and precision (goal >= 0.9 each);
- ``improved_vs_plain_images_per_s``: train_epoch with the improved recipe (configs/sweep-improved.yaml's
  train section) over the plain recipe (goal >= 0.9);
- ``every_option_vs_plain_images_per_s``: train_epoch with every batch option at once (resized crops,
  colour jitter, mixup and CutMix, the weight average) over the plain recipe: what the options cost;
- ``exp1_compiled_images_per_s``, ``exp1_compile_s``, ``exp1_compile_payback_epochs``: torch.compile
  of the plain step, and after how many mini-ImageNet epochs (44,400 images) it pays back.

    python bench/roofline.py [--threads N] [--steps 6]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cnn_cluster.config import Experiment, ModelConfig, TrainConfig, load_config  # noqa: E402
from cnn_cluster.models import shapes  # noqa: E402
from cnn_cluster.training.step import Arrays, autocast, initial_model, epoch_batches, make_ema, make_optimizer, native_bf16, train_epoch

BATCH, SIZE, CLASSES = 128, 84, 100
MODELS = {
    "exp1": ModelConfig(conv_filters=(32, 64), fc_layers=(128,)),
    "exp2": ModelConfig(conv_filters=(32, 64, 128), fc_layers=(256, 128)),
    "exp3": ModelConfig(conv_filters=(32, 64), fc_layers=(128,), max_pool=False, stride=2),
}
ROOT = Path(__file__).resolve().parent.parent
PLAIN = TrainConfig(batch_size=BATCH)
# The recipe of configs/sweep-improved.yaml (augmentation, schedule, regularisation), at batch 128.
IMPROVED = load_config(ROOT / "configs" / "sweep-improved.yaml").train.model_copy(update={"batch_size": BATCH})
# Every augmentation and averaging option at once: their whole cost per step.
EVERY = PLAIN.model_copy(update={"augmentation": "resized_crop", "color_jitter": 0.4, "mixup": 0.2, "cutmix": 1.0,
                                 "ema": 0.999})
CPU = torch.device("cpu")


def matmul_gflops(dtype: torch.dtype, threads: int, n: int = 2048, reps: int = 4) -> float:
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n ** 3 * reps / (time.perf_counter() - t0) / 1e9


def _arrays(n: int = 4 * BATCH) -> Arrays:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)
    labels = rng.integers(0, CLASSES, n).astype(np.int64)
    return Arrays(images, labels, np.zeros(n, np.uint8), (0.47, 0.45, 0.40), (0.28, 0.27, 0.28), CLASSES)


def plain_step(model_cfg: ModelConfig, train: TrainConfig, precision: str, steps: int, compiled: bool = False
               ) -> tuple[float, float]:
    """Images/s of forward + backward + optimizer on ready tensors; and the first (compile) step's seconds."""
    exp = Experiment(name="x", model=model_cfg, train=train)
    arrays = _arrays()
    model = initial_model(exp, arrays, CPU).train()
    opt = make_optimizer(model, train)
    x = torch.randn(BATCH, 3, SIZE, SIZE).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, CLASSES, (BATCH,))

    def step() -> None:
        with autocast(CPU, precision):
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    fn = torch.compile(step) if compiled else step
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    return BATCH * steps / (time.perf_counter() - t0), first


def epoch_images_per_s(model_cfg: ModelConfig, train: TrainConfig, precision: str, steps: int) -> float:
    """The project's own loop: gather, normalise, augment, step (steady state, the first epoch skipped)."""
    train = train.model_copy(update={"precision": precision})
    arrays = _arrays(steps * BATCH)
    exp = Experiment(name="x", model=model_cfg, train=train)
    model = initial_model(exp, arrays, CPU)
    opt = make_optimizer(model, train)
    ema = make_ema(model, train)
    gen = torch.Generator().manual_seed(0)
    idx = np.arange(len(arrays.labels))
    rates = []
    for epoch in range(2):
        batches = epoch_batches(idx, BATCH, 0, epoch, 0, 1)
        t0 = time.perf_counter()
        _, _, seen = train_epoch(model, opt, arrays, batches, train, 0, 10 * len(batches), CPU, gen, ema=ema)
        rates.append(seen / (time.perf_counter() - t0))
    return rates[-1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--steps", type=int, default=6)
    args = ap.parse_args()
    bf16 = native_bf16(CPU)
    print(f"cpu_native_bf16: {bf16}")
    print(f"threads: {args.threads}")
    # Without native bf16 torch falls back to a scalar kernel (0.3 GFLOP/s measured on an AVX2 EPYC):
    # measured on a small matmul only, and no bf16 model steps (minutes each, and never what auto picks).
    precisions = ("fp32", "bf16") if bf16 else ("fp32",)
    peak = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        for threads, label in ((1, "1"), (args.threads, "all")):
            native = name in precisions
            peak[name, label] = matmul_gflops(dtype, threads, n=2048 if native else 256, reps=4 if native else 1)
            print(f"matmul_{name}_{label}_threads_gflops: {peak[name, label]:.1f}")
    torch.set_num_threads(args.threads)
    step = {}
    for exp, model_cfg in MODELS.items():
        flops = shapes(model_cfg, SIZE, CLASSES).flops
        for precision in precisions:
            step[exp, precision], _ = plain_step(model_cfg, PLAIN, precision, args.steps)
            frac = 3 * flops * step[exp, precision] / (peak[precision, "all"] * 1e9)
            print(f"{exp}_{precision}_images_per_s: {step[exp, precision]:.1f}")
            print(f"{exp}_{precision}_peak_fraction: {frac:.3f}")
    if bf16:
        print(f"exp1_bf16_vs_fp32: {step['exp1', 'bf16'] / step['exp1', 'fp32']:.2f}")
    else:
        print("exp1_bf16_vs_fp32: n/a (this CPU has no native bf16; train.precision auto stays fp32)")
    precision = "bf16" if bf16 else "fp32"  # what train.precision: auto picks here
    print(f"pipeline_precision: {precision}")
    plain_epoch = epoch_images_per_s(MODELS["exp1"], PLAIN, precision, args.steps)
    improved_epoch = epoch_images_per_s(MODELS["exp1"], IMPROVED, precision, args.steps)
    improved_step, _ = plain_step(MODELS["exp1"], IMPROVED, precision, args.steps)
    print(f"exp1_plain_train_epoch_images_per_s: {plain_epoch:.1f}")
    print(f"exp1_improved_train_epoch_images_per_s: {improved_epoch:.1f}")
    print(f"exp1_improved_step_images_per_s: {improved_step:.1f}")
    print(f"pipeline_efficiency_plain: {plain_epoch / step['exp1', precision]:.3f}")
    print(f"pipeline_efficiency_improved: {improved_epoch / improved_step:.3f}")
    print(f"improved_vs_plain_images_per_s: {improved_epoch / plain_epoch:.3f}")
    every_epoch = epoch_images_per_s(MODELS["exp1"], EVERY, precision, args.steps)
    print(f"exp1_every_option_train_epoch_images_per_s: {every_epoch:.1f}")
    print(f"every_option_vs_plain_images_per_s: {every_epoch / plain_epoch:.3f}")
    compiled, first = plain_step(MODELS["exp1"], PLAIN, precision, args.steps, compiled=True)
    eager = step["exp1", precision]
    saved_per_epoch = 44_400 / eager - 44_400 / compiled
    print(f"exp1_compiled_images_per_s: {compiled:.1f}")
    print(f"exp1_compile_s: {first:.1f}")
    print(f"exp1_compile_payback_epochs: {first / saved_per_epoch if saved_per_epoch > 0 else float('inf'):.2f}")


if __name__ == "__main__":
    main()
