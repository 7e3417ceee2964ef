"""Recipe search on real photographs: ASHA against the same recipes trained to the end.

Runs, side by side in one run on a real local Ray (2 trials at a time, 1 CPU each), on
``../shared/data/mini-imagenet-sample`` (100 classes x 100 real JPEGs, stratified 50/25/25 split,
seed 0: 50 training images a class, where a recipe's regularisation shows, and 2,500 validation
images, so a point is ~25 images) at the study's 84x84 pixels, experiment 1's architecture with
the search space of ``configs/search.yaml``, 8 epochs:

(a) 12 random recipes with ASHA (grace 1 epoch, reduction factor 3: rungs at epochs 1 and 3),
(b) the same 12 recipes (same seed: the same draws) trained to the end, no scheduler,
(c) ``configs/sweep.yaml``'s recipe at the same epochs.

    python bench/search.py [--epochs 8] [--samples 12] [--seed 0] [--image-size 84] [--split 0.5,0.25,0.25]

``--seed`` draws another 12 recipes: the training itself is seeded, so a rerun of one seed repeats
its figures and the spread that matters is across seeds.

Prints ``name: value`` lines: ``asha_epochs_fraction`` ((a)'s epochs over (b)'s; goal <= 0.5),
``asha_best_val_minus_full_points`` ((a)'s best validation accuracy minus (b)'s; goal >= -1),
``searched_minus_default_val_points`` ((a)'s best minus (c); goal >= +3), and each part's seconds.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("CNNC_CACHE", str(Path(tempfile.gettempdir()) / "cnnc-bench-cache"))

from cnn_cluster import logs  # noqa: E402
from cnn_cluster.config import load_config  # noqa: E402
from cnn_cluster.run.io import read_table  # noqa: E402
from cnn_cluster.sweep.submit import submit  # noqa: E402

SAMPLE = ROOT.parent / "shared" / "data" / "mini-imagenet-sample"


def part(config: str, out: Path, name: str, overrides: list[str]) -> tuple[list[dict], float]:
    cfg = load_config(ROOT / "configs" / config, [
        f"data.root={SAMPLE}", f"output.root={out}", f"name={name}", "resources.workers_per_trial=1",
        "occlusion=null", *overrides])
    t0 = time.time()
    outcome = submit(cfg)
    return read_table(outcome.run.trials), time.time() - t0


def main() -> None:
    logs.configure(stream=sys.stderr)  # the sweep's lines to stderr: stdout keeps the name: value lines
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--samples", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0, help="the search's seed: which recipes are drawn")
    ap.add_argument("--image-size", type=int, default=84)
    ap.add_argument("--split", default="0.5,0.25,0.25", help="train,val,test fractions per class")
    args = ap.parse_args()
    if not SAMPLE.is_dir():
        sys.exit(f"{SAMPLE}: the shared real sample is not here")
    common = [f"data.image_size={args.image_size}", f"data.split=[{args.split}]", f"train.epochs={args.epochs}"]
    search = [*common, f"search.num_samples={args.samples}", f"search.seed={args.seed}", "search.grace_period=1",
              "search.reduction_factor=3",
              "experiments=[{name: exp1, conv_filters: [32, 64], fc_layers: [128], max_pool: true, stride: 1}]"]
    with tempfile.TemporaryDirectory(prefix="cnnc-bench-search-") as tmp:
        asha, asha_s = part("search.yaml", Path(tmp), "asha", [*search, "search.scheduler=asha"])
        full, full_s = part("search.yaml", Path(tmp), "full", [*search, "search.scheduler=none"])
        plain, plain_s = part("sweep.yaml", Path(tmp), "default", [
            *common, "experiments=[{name: exp1, conv_filters: [32, 64], fc_layers: [128], max_pool: true, "
                     f"stride: 1, epochs: {args.epochs}}}]"])
    assert [t["searched"] for t in asha] == [t["searched"] for t in full], "the two searches drew different recipes"
    best = {k: max(t["val_acc"] for t in rows if t["val_acc"] is not None)
            for k, rows in (("asha", asha), ("full", full), ("default", plain))}
    print(f"asha_epochs_fraction: {sum(t['epochs_run'] for t in asha) / sum(t['epochs_run'] for t in full):.3f}")
    print(f"asha_trials_stopped: {sum(t['status'] == 'stopped' for t in asha)} of {len(asha)}")
    print(f"asha_best_val_minus_full_points: {100 * (best['asha'] - best['full']):+.2f}")
    print(f"searched_minus_default_val_points: {100 * (best['asha'] - best['default']):+.2f}")
    top = max((t for t in asha if t["val_acc"] is not None), key=lambda t: t["val_acc"])
    print(f"best_recipe_asha: {top['trial']} {top['searched']}")
    print(f"best_val_asha: {100 * best['asha']:.2f}")
    print(f"best_val_full: {100 * best['full']:.2f}")
    print(f"best_val_default: {100 * best['default']:.2f}")
    print(f"seconds_asha: {asha_s:.0f}")
    print(f"seconds_full: {full_s:.0f}")
    print(f"seconds_default: {plain_s:.0f}")


if __name__ == "__main__":
    main()
