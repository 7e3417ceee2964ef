"""Training throughput inside the sweep machinery vs a bare PyTorch loop, and a trial's fixed cost.

Same data, model (the study's experiment 1), batch size and threads, in one run:
(a) the project's own epoch function in a bare loop; (b) one Tune trial running a
one-worker TorchTrainer. Prints ``name: value`` lines.
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
from cnn_cluster.results import get_state, read_table  # noqa: E402
from cnn_cluster.train import Arrays, build, epoch_batches, make_optimizer, train_epoch  # noqa: E402

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
    model = build(exp, arrays, torch.device("cpu"))
    opt = make_optimizer(model, exp.train)
    gen = torch.Generator().manual_seed(0)
    idx, rates = data.indices("train"), []
    for ep in range(1, EPOCHS + 1):
        batches = epoch_batches(idx, BATCH, 0, ep, 0, 1)
        t0 = time.perf_counter()
        _, _, seen = train_epoch(model, opt, arrays, batches, exp.train, 0, 1, torch.device("cpu"), gen)
        rates.append(seen / (time.perf_counter() - t0))
    return float(np.mean(rates[1:]))


def sweep(cfg, root: Path) -> tuple[float, float, float]:
    """(steady images/s, trial fixed cost s, sweep wall s) of one trial in the machinery."""
    from cnn_cluster.cluster import ensure_ray
    from cnn_cluster.submit import submit

    ensure_ray(num_cpus=2)
    cfg = validate({**CONFIG, "output": {"root": str(root)}})
    out = submit(cfg, out=open(os.devnull, "w"))
    epochs = read_table(out.run.epochs)
    wall = get_state(out.run)["sweep_seconds"]
    compute = sum(e["seconds"] for e in epochs)
    return float(np.mean([e["images_per_s"] for e in epochs[1:]])), wall - compute, wall


def main() -> None:
    cfg = validate({**CONFIG, "output": {"root": "unused"}})
    load_dataset(cfg.data)  # generate outside the timings
    a = bare(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        b, overhead, wall = sweep(cfg, Path(tmp))
    print(f"threads: {THREADS}")
    print(f"bare_images_per_s: {a:.1f}")
    print(f"sweep_images_per_s: {b:.1f}")
    print(f"train_throughput_ratio: {b / a:.3f}")
    print(f"trial_overhead_s: {overhead:.1f}")
    print(f"sweep_wall_s: {wall:.1f}")


if __name__ == "__main__":
    main()
