"""Training recipes on real photographs: each mini-ImageNet recipe of configs/ on the shared sample.

Trains the study's experiment 1 (conv [32, 64], FC [128], max-pool, stride 1) on
``../shared/data/mini-imagenet-sample`` (100 classes x 100 real JPEGs; stratified split, 80/10/10
unless ``--split`` says otherwise, seed 0) with the ``train`` section of each mini-ImageNet config
in configs/, all at the same epochs, side by side in one run, with the project's own training
functions (no Ray: the recipe, not the cluster, is measured). Test accuracy is taken at the best
validation epoch, as a sweep does.

    python bench/recipe.py [--epochs 10] [--threads 2] [--split 0.8,0.1,0.1] [--set train.FIELD=VALUE ...]

``--set`` changes the improved recipe (to measure a candidate before writing it into its config).
Prints ``name: value`` lines: ``<recipe>_test_acc``, ``<recipe>_images_per_s``,
``<recipe>_collapsed`` (validation below 2x chance after its warm-up),
``improved_minus_plain_points`` (goal >= 3).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("CNNC_CACHE", str(Path(tempfile.gettempdir()) / "cnnc-bench-cache"))

from cnn_cluster.config import Experiment, load_config  # noqa: E402
from cnn_cluster.data import load_dataset  # noqa: E402
from cnn_cluster.training.step import Arrays, epoch_batches, initial_model, make_ema, make_optimizer, predict, train_epoch

SAMPLE = ROOT.parent / "shared" / "data" / "mini-imagenet-sample"
RECIPES = {"plain": "sweep.yaml", "improved": "sweep-improved.yaml"}  # the configs on mini-ImageNet


def recipe(config: str, epochs: int, overrides: list[str]) -> Experiment:
    """Experiment 1 of a config, at the given epochs, on the sample."""
    cfg = load_config(ROOT / "configs" / config, overrides)
    exp = next(e for e in cfg.resolved_experiments() if e.name == "exp1")
    return exp.model_copy(update={"train": exp.train.model_copy(update={"epochs": epochs})})


def train(exp: Experiment, arrays: Arrays, splits: dict[str, np.ndarray]) -> dict:
    """Train, evaluate each epoch on val, test the best-val weights; accuracy and images/s."""
    cpu = torch.device("cpu")
    model = initial_model(exp, arrays, cpu)
    opt = make_optimizer(model, exp.train)
    ema = make_ema(model, exp.train)
    scored = ema.module if ema is not None else model  # what validation and test see
    gen = torch.Generator().manual_seed(exp.train.seed)
    cfg = exp.train
    steps = len(epoch_batches(splits["train"], cfg.batch_size, 0, 0, 0, 1))
    best, vals, trains, seen, seconds = (-1.0, None), [], [], 0, 0.0
    for epoch in range(1, cfg.epochs + 1):
        batches = epoch_batches(splits["train"], cfg.batch_size, cfg.seed, epoch, 0, 1)
        torch.manual_seed(cfg.seed * 100_003 + epoch * 1009)  # as the sweep's worker does
        t0 = time.perf_counter()
        _, correct, n = train_epoch(model, opt, arrays, batches, cfg, (epoch - 1) * steps, cfg.epochs * steps,
                                    cpu, gen, ema=ema)
        seconds += time.perf_counter() - t0
        seen += n
        val = accuracy(scored, arrays, splits["val"], cfg.test_time_flip)
        vals.append(val)
        trains.append(correct / max(n, 1))
        print(f"  {exp.name} epoch {epoch}: train {100 * trains[-1]:.1f}% val {100 * val:.1f}% "
              f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
        if val > best[0]:
            best = (val, {k: v.clone() for k, v in scored.state_dict().items()})
    scored.load_state_dict(best[1])
    chance = 1 / arrays.num_classes
    return {"test_acc": accuracy(scored, arrays, splits["test"], cfg.test_time_flip),
            # the other evaluation of the same weights: what test-time flipping adds (or costs)
            "test_acc_other_flip": accuracy(scored, arrays, splits["test"], not cfg.test_time_flip), "best_val": best[0], "images_per_s": seen / seconds,
            "collapsed": any(v < 2 * chance for v in vals[cfg.warmup_epochs + 1:]), "vals": vals, "trains": trains}


def accuracy(model: torch.nn.Module, arrays: Arrays, idx: np.ndarray, flip: bool = False) -> float:
    probs = predict(model, arrays, idx, torch.device("cpu"), flip=flip)
    return float((probs.argmax(1).numpy() == arrays.labels[idx]).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="train.FIELD=VALUE (improved)")
    ap.add_argument("--only", choices=sorted(RECIPES), help="one recipe only (probing candidates)")
    ap.add_argument("--split", default="0.8,0.1,0.1", help="train,val,test fractions per class")
    ap.add_argument("--data", type=Path, default=SAMPLE,
                    help="a mini-ImageNet folder (default: the shared sample; ../shared/data/mini-imagenet-train "
                         "for the full split)")
    args = ap.parse_args()
    if not args.data.is_dir():
        sys.exit(f"bench/recipe.py: no mini-ImageNet folder at {args.data}")
    torch.set_num_threads(args.threads)
    t0 = time.time()
    data_sets = [f"data.root={args.data}", f"data.split=[{args.split}]"]
    exps = {name: recipe(path, args.epochs, [*data_sets, *(args.overrides if name == "improved" else [])])
            for name, path in RECIPES.items() if args.only in (None, name)}
    data = load_dataset(load_config(ROOT / "configs" / RECIPES["plain"], data_sets).data)
    arrays = Arrays(np.asarray(data.images), data.labels, data.split, data.mean, data.std, data.num_classes)
    splits = {s: data.indices(s) for s in ("train", "val", "test")}
    print(f"data: {len(splits['train'])} train / {len(splits['val'])} val / {len(splits['test'])} test, "
          f"{data.num_classes} classes; epochs: {args.epochs}; threads: {args.threads}")
    results = {}
    for name, exp in exps.items():
        results[name] = r = train(exp, arrays, splits)
        print(f"{name}_recipe: {exp.train.model_dump(exclude={'epochs', 'seed', 'momentum'})}")
        print(f"{name}_test_acc: {100 * r['test_acc']:.2f}")
        print(f"{name}_test_acc_{'without' if exp.train.test_time_flip else 'with'}_test_time_flip: "
              f"{100 * r['test_acc_other_flip']:.2f}")
        print(f"{name}_best_val_acc: {100 * r['best_val']:.2f}")
        print(f"{name}_val_by_epoch: {' '.join(f'{100 * v:.1f}' for v in r['vals'])}")
        print(f"{name}_train_acc_by_epoch: {' '.join(f'{100 * v:.1f}' for v in r['trains'])}")
        print(f"{name}_images_per_s: {r['images_per_s']:.1f}")
        print(f"{name}_collapsed: {r['collapsed']}")
    if len(results) == 2:
        print(f"improved_minus_plain_points: {100 * (results['improved']['test_acc'] - results['plain']['test_acc']):.2f}")
    print(f"wall_s: {time.time() - t0:.0f}")


if __name__ == "__main__":
    main()
