"""Training throughput inside the sweep machinery vs a bare PyTorch loop, and a trial's fixed cost.

Same data, model (the study's experiment 1), batch size and threads, in one run:
(a) the project's own epoch function in a bare loop, measured before and after (b) so
that drift of this shared box does not land on one side; (b) a sweep of two trials of
that experiment, one after the other, each a one-worker TorchTrainer. The first trial
pays the sweep's cold start (trial driver process, imports); the second shows what
each further trial of a sweep costs. Prints ``name: value`` lines.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("CNNC_CACHE", str(Path(tempfile.gettempdir()) / "cnnc-bench-cache"))

from cnn_cluster.config import validate  # noqa: E402
from cnn_cluster.data import load_dataset  # noqa: E402
from cnn_cluster.run.state import get_state  # noqa: E402
from cnn_cluster.run.io import read_table  # noqa: E402
from cnn_cluster.training.step import Arrays, initial_model, epoch_batches, make_optimizer, train_epoch  # noqa: E402

EPOCHS, BATCH = 4, 128
THREADS = int(os.environ.get("BENCH_THREADS", "1"))  # torch threads = the worker's CPUs
CONFIG = {
    "name": "bench",
    "data": {"synthetic": {"classes": 10, "images_per_class": 120}},  # 960 training images
    "train": {"epochs": EPOCHS, "batch_size": BATCH},
    "experiments": [{"name": "exp1", "conv_filters": [32, 64], "fc_layers": [128], "max_pool": True, "stride": 1}],
    "resources": {"workers_per_trial": 1, "cpus_per_worker": THREADS},
}


def bare(cfg) -> float:
    """Steady-state images/s of the bare loop (epoch 1 excluded as warm-up)."""
    torch.set_num_threads(THREADS)
    data = load_dataset(cfg.data)
    arrays = Arrays(np.asarray(data.images), data.labels, data.split, data.mean, data.std, data.num_classes)
    exp = cfg.resolved_experiments()[0]
    model = initial_model(exp, arrays, torch.device("cpu"))
    opt = make_optimizer(model, exp.train)
    gen = torch.Generator().manual_seed(0)
    idx, rates = data.indices("train"), []
    for ep in range(1, EPOCHS + 1):
        batches = epoch_batches(idx, BATCH, 0, ep, 0, 1)
        t0 = time.perf_counter()
        _, _, seen = train_epoch(model, opt, arrays, batches, exp.train, 0, 1, torch.device("cpu"), gen)
        rates.append(seen / (time.perf_counter() - t0))
    return float(np.mean(rates[1:]))


def sweep(root: Path) -> dict[str, float]:
    """Steady images/s, the cold and the warm trial's fixed cost, and the sweep's wall time."""
    import ray

    from cnn_cluster.cluster import ensure_ray
    from cnn_cluster.sweep.submit import submit

    ensure_ray(num_cpus=2)
    exp = CONFIG["experiments"][0]
    cfg = validate({**CONFIG, "experiments": [exp, {**exp, "name": "exp1-again"}],
                    "resources": {**CONFIG["resources"], "max_concurrent_trials": 1}, "output": {"root": str(root)}})
    out = submit(cfg)
    ray.shutdown()  # the bare loop after this runs on an idle box, as the one before it
    state, epochs = get_state(out.run), read_table(out.run.epochs)
    compute = {t: sum(e["seconds"] for e in epochs if e["trial"] == t) for t in ("exp1", "exp1-again")}
    end = {t: out.run.final(t).stat().st_mtime for t in compute}  # the trial driver's last write
    tail = state["started"] + state["sweep_seconds"] - end["exp1-again"]  # the sweep's own wind-down
    return {
        "images_per_s": float(np.mean([e["images_per_s"] for e in epochs if e["epoch"] > 1])),
        "cold": end["exp1"] - state["started"] - compute["exp1"] + tail,
        "warm": end["exp1-again"] - end["exp1"] - compute["exp1-again"],
        "wall": state["sweep_seconds"],
    }


def main() -> None:
    cfg = validate({**CONFIG, "output": {"root": "unused"}})
    load_dataset(cfg.data)  # generate outside the timings
    before = bare(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        b = sweep(Path(tmp))
    after = bare(cfg)
    a = (before + after) / 2
    print(f"threads: {THREADS}")
    print(f"bare_images_per_s: {a:.1f} (before {before:.1f}, after {after:.1f})")
    print(f"sweep_images_per_s: {b['images_per_s']:.1f}")
    print(f"train_throughput_ratio: {b['images_per_s'] / a:.3f}")
    print(f"trial_overhead_s: {b['cold']:.1f}")
    print(f"next_trial_overhead_s: {b['warm']:.1f}")
    print(f"sweep_wall_s: {b['wall']:.1f}")


if __name__ == "__main__":
    main()
