"""The study's Table 1 on the full real mini-ImageNet, through ``cnnc submit`` itself.

Trains the experiments of a sweep file (default: the shipped study recipe,
``configs/sweep-improved.yaml``) on ``../shared/data/mini-imagenet-train`` (100 classes x 500 real
JPEGs; stratified 80/10/10 split, seed 0: 40,000 / 5,000 / 5,000 images) with ``cnnc submit``, and
compares each test accuracy with the study's (41.66 % for exp 1, 43.2 % for exp 2, exp 3 below exp 2).

    python bench/table1.py [--config configs/sweep-improved.yaml] [--only exp1,exp3] [--epochs N]
                           [--set FIELD=VALUE ...] [--resume RUN_DIR] [--out runs/table1]

A full run takes hours on 2 CPUs: run it in the background (``nohup python bench/table1.py > log &``).
As it goes it appends ``cnnc submit``'s lines to ``OUT/<run>.log`` and redraws ``OUT/<run>.png`` (train
and validation accuracy per epoch, the study's figures as lines) after every epoch; after an
interruption ``--resume RUN_DIR`` continues the same run folder.

Prints ``name: value`` lines per experiment: ``expN_test_acc``, ``expN_best_epoch``,
``expN_train_acc_at_best``, ``expN_minus_seed_points`` (against the study's figure; exp 3 against
this run's exp 2: negative means below it, as the study found), ``expN_val_by_epoch``.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("CNNC_CACHE", str(Path(tempfile.gettempdir()) / "cnnc-bench-cache"))

from cnn_cluster.config import load_config  # noqa: E402
from cnn_cluster.errors import CnncError  # noqa: E402
from cnn_cluster.run.paths import RunDir  # noqa: E402
from cnn_cluster.run.io import read_table  # noqa: E402
from cnn_cluster.study import reference_acc, study_row  # noqa: E402

FULL = ROOT.parent / "shared" / "data" / "mini-imagenet-train"
CNNC = Path(sys.executable).with_name("cnnc")
# cnnc submit's line at an epoch's end: "[  1626s] exp1: epoch 6/10  loss 3.100  train 33.2%  val 31.1%  261 img/s"
EPOCH_LINE = re.compile(r"^(?:\[\s*\d+s\]\s+)?(\S+): epoch (\d+)/(\d+)\s+loss \S+\s+train ([\d.]+)%\s+val ([\d.]+)%")


def derived_config(config: Path, only: list[str], epochs: int | None, out: Path) -> Path:
    """The sweep file as given, cut to ``only`` and set to ``epochs`` (per experiment, where a
    per-experiment value would otherwise win), written beside the results: the command reruns it."""
    raw = yaml.safe_load(config.read_text())
    exps = raw.get("experiments") or []
    if only:
        unknown = set(only) - {e.get("name") for e in exps}
        if unknown:
            sys.exit(f"--only: {', '.join(sorted(unknown))} not in {config} "
                     f"(has {', '.join(str(e.get('name')) for e in exps)})")
        exps = [e for e in exps if e.get("name") in only]
    if epochs is not None:
        exps = [{**e, "epochs": epochs} for e in exps]
    raw["experiments"] = exps
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{config.stem}{'-' + '-'.join(only) if only else ''}{f'-{epochs}ep' if epochs else ''}.yaml"
    path.write_text(f"# {config} as bench/table1.py ran it\n" + yaml.safe_dump(raw, sort_keys=False))
    return path


def run_submit(args: list[str], out: Path, study: dict[str, float], run: RunDir | None) -> tuple[int, RunDir | None]:
    """``cnnc submit`` with its lines echoed and appended to ``OUT/<run>.log`` (from the moment the run
    folder is known: the lines before it are kept and written then); the curves ``OUT/<run>.png`` are
    redrawn from the whole log, earlier starts of the same run included, after every epoch line."""
    pending: list[str] = []
    fh = None
    with subprocess.Popen([str(CNNC), "submit", *args, "--no-dashboard"], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, bufsize=1) as proc:
        # `kill` of this script reaches cnnc submit too (it records the run interrupted, for --resume),
        # where it would otherwise leave the sweep training in the background
        signal.signal(signal.SIGTERM, lambda *_: proc.terminate())
        for line in proc.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            if run is None and line.startswith("run folder: "):
                run = RunDir(Path(line.removeprefix("run folder: ").strip()))
            pending.append(line)
            if run is None:
                continue
            if fh is None:
                fh = (out / f"{run.root.name}.log").open("a")
            fh.writelines(pending)
            fh.flush()
            pending.clear()
            if EPOCH_LINE.match(line):
                draw(curves_from_log(Path(fh.name)), out / f"{run.root.name}.png", study)
    if fh is not None:
        fh.close()
    return proc.returncode, run


def curves_from_log(log: Path) -> dict[str, dict[int, tuple[float, float]]]:
    """trial -> epoch -> (train %, val %), the last line of each epoch winning (a resumed trial's)."""
    curves: dict[str, dict[int, tuple[float, float]]] = {}
    for line in log.read_text().splitlines():
        m = EPOCH_LINE.match(line)
        if m:
            curves.setdefault(m[1], {})[int(m[2])] = (float(m[4]), float(m[5]))
    return curves


def draw(curves: dict[str, dict[int, tuple[float, float]]], path: Path, study: dict[str, float] | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(8, 5))
    for i, (name, by_epoch) in enumerate(sorted(curves.items())):
        epochs = sorted(by_epoch)
        color = f"C{i}"
        ax.plot(epochs, [by_epoch[e][1] for e in epochs], "-o", ms=3, color=color, label=f"{name} validation")
        ax.plot(epochs, [by_epoch[e][0] for e in epochs], ":", color=color, label=f"{name} train")
        if study and name in study:
            ax.axhline(study[name], color=color, lw=0.8, ls="--", label=f"{name} study (test)")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("Full mini-ImageNet: accuracy per epoch (dashed: the study's test accuracy)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def study_figures(config: Path) -> dict[str, float]:
    """experiment -> the study's test accuracy (%) for its architecture, where the study gives one."""
    out = {}
    for e in load_config(config).resolved_experiments():
        m = e.model
        row = study_row(m.conv_filters, m.fc_layers, m.max_pool, m.stride)
        if row is not None and row.test_acc is not None:
            out[e.name] = 100 * row.test_acc
    return out


def report(run: RunDir) -> None:
    trials, epochs = read_table(run.trials), read_table(run.epochs)
    exp2 = reference_acc(trials)
    for t in trials:
        name = t["trial"]
        mine = sorted((e for e in epochs if e["trial"] == name), key=lambda e: e["epoch"])
        at_best = next((e for e in mine if e["epoch"] == t["best_epoch"]), None)
        row = study_row(t["conv_filters"], t["fc_layers"], t["max_pool"], t["stride"])
        print(f"{name}_status: {t['status']}")
        if t["test_acc"] is None:
            continue
        print(f"{name}_test_acc: {100 * t['test_acc']:.2f}")
        print(f"{name}_best_epoch: {t['best_epoch']} of {t['epochs']}")
        print(f"{name}_best_val_acc: {100 * t['val_acc']:.2f}")
        if at_best:
            print(f"{name}_train_acc_at_best: {100 * at_best['train_acc']:.2f}")
        if mine:
            print(f"{name}_train_acc_at_end: {100 * mine[-1]['train_acc']:.2f}")
        if row is not None and row.test_acc is not None:
            print(f"{name}_minus_seed_points: {100 * (t['test_acc'] - row.test_acc):+.2f}  (study {row.claim})")
        elif row is not None and exp2 is not None:
            print(f"{name}_minus_seed_points: {100 * (t['test_acc'] - exp2):+.2f}  (study: {row.claim}; "
                  f"this run's exp 2 {100 * exp2:.2f})")
        curve = " ".join(f"{100 * e['val_acc']:.1f}" for e in mine)
        print(f"{name}_val_by_epoch: {curve}")
        print(f"{name}_images_per_s: {t['images_per_s']:.0f}")
        print(f"{name}_train_seconds: {t['train_seconds']:.0f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "sweep-improved.yaml")
    ap.add_argument("--only", default="", help="comma-separated experiment names (default: all)")
    ap.add_argument("--epochs", type=int, help="train every experiment this many epochs")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE")
    ap.add_argument("--resume", type=Path, help="continue an interrupted run folder")
    ap.add_argument("--data", type=Path, default=FULL, help="mini-ImageNet folder (default: the full shared split)")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "table1")
    args = ap.parse_args()
    if not args.data.is_dir():
        sys.exit(f"bench/table1.py: no mini-ImageNet folder at {args.data}")
    if args.resume is not None:
        run: RunDir | None = RunDir(args.resume.resolve())
        submit_args, config = ["--resume", str(run.root)], run.config
    else:
        config = derived_config(args.config, [s for s in args.only.split(",") if s], args.epochs, args.out)
        sets = [f"data.root={args.data}", "data.split=[0.8, 0.1, 0.1]", "data.seed=0", f"output.root={args.out}",
                "occlusion=null", *args.overrides]
        try:
            load_config(config, sets)  # a bad --set fails here, in one line, before anything starts
        except CnncError as exc:
            config.unlink()
            print(f"bench/table1.py: {exc}", file=sys.stderr)
            sys.exit(2)
        submit_args, run = [str(config), *(a for s in sets for a in ("--set", s))], None
    args.out.mkdir(parents=True, exist_ok=True)
    study = study_figures(config)
    rc, run = run_submit(submit_args, args.out, study, run)
    if run is None or not run.trials.exists():
        sys.exit(f"bench/table1.py: cnnc submit exited {rc} without results")
    log = args.out / f"{run.root.name}.log"
    draw(curves_from_log(log), args.out / f"{run.root.name}.png", study)
    print(f"run: {run.root}")
    print(f"log: {log}")
    print(f"figure: {args.out / (run.root.name + '.png')}")
    report(run)


if __name__ == "__main__":
    main()
