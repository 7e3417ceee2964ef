"""The report's sections, built from one read of a run folder (``run.read.RunData``).

Plain functions of the run's tables: every sentence is computed from the numbers, nothing is
canned. page.py renders what these return; build.py draws the figures they point at.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Optional

from .. import study
from ..config import SweepConfig
from ..run.read import RunData
from . import search as search_report
from .page import Block, Image, Section, Table

COLUMNS = ["Experiment", "Conv Filters", "Conv Layers", "FC Layers", "Max Pooling", "Stride", "Epochs",
           "Test Accuracy"]


def experiments_rows(trials: list[dict], best: Optional[str]) -> list[dict]:
    """The study's columns, one row per trial; the best row is marked with '*'."""
    rows = []
    for t in trials:
        acc = f"{100 * t['test_acc']:.2f} %" if t.get("test_acc") is not None else t["status"]
        rows.append({
            "Experiment": t["trial"] + (" *" if t["trial"] == best else ""),
            "Conv Filters": str(list(t["conv_filters"])),
            "Conv Layers": str(t["conv_layers"]),
            "FC Layers": str(list(t["fc_layers"])),
            "Max Pooling": "yes" if t["max_pool"] else "no",
            "Stride": str(t["stride"]),
            "Epochs": str(t["epochs"]),
            "Test Accuracy": acc,
        })
    return rows


def occlusion_param_rows(occ: list[dict]) -> list[tuple[str, str]]:
    """The study's parameter table for Part B, as (parameter, value) rows."""
    first = occ[0]
    fills = {"mean": "dataset mean (0 after normalisation: neutral gray)", "gray": "0.5 gray in pixel space",
             "zero": "black (0 in pixel space)", "blur": "Gaussian blur of the image"}
    images = len({r["index"] for r in occ})
    rows = [("Window size (N x N)", f"{first['window']} x {first['window']} pixels"),
            ("Stride", f"{first['stride']} pixels"), ("Replacement value", fills[first["fill"]]),
            ("Confidence map", f"{first['map_h']} x {first['map_w']} positions"),
            ("Images analysed", f"{images} ({sum(r['correct'] for r in occ if r['target_kind'] == 'true')} "
                                f"correctly classified)"),
            ("Model", first["trial"])]
    return rows


def object_context_line(occ: list[dict]) -> str:
    """One line: on how many images the model relied on the object, on how many on the context."""
    known = [r for r in occ if r["target_kind"] == "true" and r["correct"] and r["pointing"] is not None]
    if not known:
        return ("Object or context: no verdict, because no mapped image has a known object box "
                "(the built-in data records its boxes; for real photographs draw them on the report page, "
                "then cnnc occlude RUN --boxes boxes.csv, or set data.boxes to a CSV of boxes).")
    obj = sum(r["pointing"] for r in known)
    share = sum(r["object_share"] for r in known if r["object_share"] == r["object_share"]) / len(known)
    base = sum(r["box_share"] for r in known) / len(known)
    return (f"Object or context: the largest confidence drop fell on the object in {obj} of {len(known)} images "
            f"and on the context in {len(known) - obj}; {100 * share:.0f}% of the drop lay on windows centred on "
            f"the object, which holds {100 * base:.0f}% of window positions.")


# --------------------------------------------------------------------------- one run


def run_sections(rd: RunData, names: Optional[list[str]], files: dict[str, Path], occ_line: str,
                 search: list[search_report.GroupSummary], compared: Optional[Section] = None) -> list[Section]:
    """The page of one run: its data read once (``rd``), the figures drawn for it (``files``)."""
    trials, epochs, preds, occ, best = rd.trials, rd.epochs, rd.predictions, rd.occlusion, rd.best
    out = [_what_was_run(rd), _experiments(trials, best, _is_mini_imagenet(rd))]
    if search:
        out.append(_search(search, files.get("search")))
    if "cost" in files:
        out.append(Section("Accuracy against size and compute", [Image(files["cost"], "test accuracy vs params and FLOPs")]))
    if "curves" in files:
        out.append(Section("Training curves", [Image(files["curves"], "loss and accuracy per epoch")]))
    if preds and names:
        out += [_confusion(preds, names, files.get("confusion")), _per_class(preds, names)]
    if "misclassified" in files:
        out.append(Section("Misclassified test images",
                           [f"The best model ({best}) on test images it got wrong, most confident first; "
                            "titles read T: true class, P: predicted class.", Image(files["misclassified"], "gallery")]))
    occ = [r for r in occ if r["method"] == "occlusion"]
    if occ:
        out.append(_occlusion(occ, files, occ_line))
    if compared is not None:  # attribution methods side by side, their faithfulness and checks
        out.append(compared)
    out.append(Section("Observations", [observations(trials, epochs, best, occ_line)]))
    return out


def _what_was_run(rd: RunData) -> Section:
    state = rd.state
    ds, hw, v = state.get("dataset") or {}, state.get("hardware") or {}, state.get("versions") or {}
    counts = ds.get("counts") or {}
    rows = [
        ["Run", rd.name],
        ["State", state.get("state", "unknown")],
        ["Dataset", f"{ds.get('layout', '?')} at {ds.get('root', '?')}"],
        ["Images", f"{sum(counts.values())} ({', '.join(f'{k} {v}' for k, v in counts.items())}), "
                   f"{ds.get('classes', '?')} classes, {ds.get('image_size', '?')}x{ds.get('image_size', '?')}"],
        ["Split rule", str(ds.get("split_rule"))],
        ["Hardware", f"{hw.get('nodes', '?')} node(s), {hw.get('cpus', '?')} CPUs, {hw.get('gpus', '?')} GPUs "
                     f"({hw.get('host', '?')}, {hw.get('machine', '?')})"],
        *([["SLURM", _slurm_starts(state["slurm_starts"])]] if state.get("slurm_starts") else []),
        ["Versions", ", ".join(f"{k} {val}" for k, val in v.items())],
        ["Precision", ", ".join(f"{k} {val}" for k, val in (state.get("precision") or {}).items()) or "?"],
        ["Wall time", f"sweep {state.get('sweep_seconds', 0):.0f} s"
                      + (f", occlusion {state['occlusion_seconds']:.0f} s" if "occlusion_seconds" in state else "")],
        ["Config", _config_summary(rd.config)],
    ]
    return Section("What was run", [Table(["", ""], rows)])


def _slurm_starts(starts: list[dict]) -> str:
    """``job 4711: 3 starts (2 requeued, each resuming the run)``, per job that drove the run."""
    jobs: dict[str, int] = {}
    for start in starts:
        jobs[start["job"]] = jobs.get(start["job"], 0) + 1
    return "; ".join(f"job {job}: {n} start(s)" + (f" ({n - 1} requeued, each resuming the run)" if n > 1 else "")
                     for job, n in jobs.items())


def _config_summary(cfg: Optional[SweepConfig]) -> str:
    """The sweep's defaults and resources in one line (config.yaml in the run folder has it all)."""
    if cfg is None:
        return "config.yaml unreadable"
    t, r = cfg.train, cfg.resources
    return (f"{cfg.name}: {len(cfg.experiments)} experiments; defaults {t.optimizer} "
            f"lr {t.lr}, batch {t.batch_size}, {t.epochs} epochs, scheduler {t.scheduler}, "
            f"augmentation {t.augmentation}, batch norm {t.batch_norm}, dropout {t.dropout}; "
            f"{r.workers_per_trial} worker(s) x {r.cpus_per_worker} CPU per trial "
            "(config.yaml in the run folder reruns any row)")


def _is_mini_imagenet(rd: RunData) -> bool:
    """The run's images are mini-ImageNet's (prepared from a published layout, or packed with its 100
    classes), so the study's own figures are the ones to compare with."""
    if rd.config is None:
        return False
    classes = (rd.state.get("dataset") or {}).get("classes")
    return rd.config.data.source == "miniimagenet" or (rd.config.data.source == "packed" and classes == 100)


def _experiments(trials: list[dict], best: Optional[str], mini_imagenet: bool = False) -> Section:
    cols = COLUMNS + (["Study (difference, points)"] if mini_imagenet else []) + [
        "Val Accuracy", "Params", "MFLOPs", "Images/s"]
    reference = study.reference_acc(trials)
    rows, mark = [], None
    for i, t in enumerate(trials):
        mark = i if t["trial"] == best else mark
        acc = (lambda k: f"{100 * t[k]:.2f} %" if t.get(k) is not None else t["status"])
        versus = [_versus_study(t, reference)] if mini_imagenet else []
        rows.append([t["trial"], str(list(t["conv_filters"])), str(t["conv_layers"]), str(list(t["fc_layers"])),
                     "yes" if t["max_pool"] else "no", str(t["stride"]), str(t["epochs"]), acc("test_acc"), *versus,
                     acc("val_acc"), f"{t['params'] / 1e6:.2f}M", f"{t['flops'] / 1e6:.0f}",
                     f"{t['images_per_s']:.0f}" if t.get("images_per_s") else "-"])
    note = "The highlighted row has the best validation accuracy; its test predictions feed the sections below."
    if mini_imagenet:
        note += (" The study column gives the reference study's test accuracy for the same architecture and this "
                 "run's difference from it (its exp 3 has no figure: only that it scored below exp 2).")
    return Section("Experiments", [Table(cols, rows, mark, id="experiments"), note])


def _versus_study(trial: dict, reference: Optional[float]) -> str:
    row = study.study_row(trial["conv_filters"], trial["fc_layers"], trial["max_pool"], trial["stride"])
    if row is None:
        return "-"
    if trial.get("test_acc") is None:
        return row.claim
    return study.comparison(row, trial["test_acc"], reference)


def _search(summaries: list[search_report.GroupSummary], image: Optional[Path]) -> Section:
    """Per experiment: its best recipe (the one trial tested), its top trials, what ASHA saved."""
    blocks: list[Block] = [search_report.lines(summaries)]
    if image is not None:
        blocks.append(Image(image, "validation accuracy against each searched field"))
    for g in summaries:
        blocks += [f"Top trials of {g.experiment}:", Table(search_report.TOP_COLUMNS, search_report.top_rows(g), 0)]
    blocks.append("Only each experiment's best trial by validation accuracy was evaluated on the test split; "
                  "best.yaml beside this page trains those recipes as a sweep file.")
    return Section("Recipe search", blocks)


def _confusion(preds: list[dict], names: list[str], image: Optional[Path]) -> Section:
    pairs = confused_pairs(preds)
    rows = [[names[a], names[b], str(ab), str(ba), str(ab + ba)] for (a, b), (ab, ba) in pairs]
    blocks: list[Block] = ["The most-confused class pairs of the best model on the test split: errors between "
                           "visually similar classes show up here first."]
    blocks.append(Table(["Class A", "Class B", "A taken for B", "B taken for A", "Total"], rows) if rows
                  else "No test image was misclassified.")
    if image is not None:
        blocks.append(Image(image, "one misclassified example per confused pair"))
    return Section("The confusion that matters", blocks)


def confused_pairs(preds: list[dict], k: int = 15) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """The k class pairs most often confused (either direction), with both directions' counts."""
    errors = Counter((p["true"], p["pred"]) for p in preds if p["true"] != p["pred"])
    totals = Counter()
    for (a, b), n in errors.items():
        totals[(min(a, b), max(a, b))] += n
    ranked = sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
    return [((a, b), (errors[(a, b)], errors[(b, a)])) for (a, b), _ in ranked]


def _per_class(preds: list[dict], names: list[str]) -> Section:
    right, total = Counter(), Counter()
    for p in preds:
        total[p["true"]] += 1
        right[p["true"]] += p["true"] == p["pred"]
    acc = sorted(((right[c] / total[c], names[c], total[c]) for c in total), key=lambda x: (-x[0], x[1]))
    fmt = (lambda rows: [[n, f"{100 * a:.1f} %", str(t)] for a, n, t in rows])
    k = min(10, len(acc) // 2) or len(acc)
    return Section("Per-class accuracy", [
        f"Best {k} classes", Table(["Class", "Accuracy", "Test images"], fmt(acc[:k])),
        f"Worst {k} classes", Table(["Class", "Accuracy", "Test images"], fmt(acc[::-1][:k])),
    ])


def _occlusion(occ: list[dict], files: dict[str, Path], line: str) -> Section:
    rows = [list(r) for r in occlusion_param_rows(occ)]
    blocks: list[Block] = ["An NxN window of the fill value slides over each image; the map holds the "
                           "probability of the class at each window position. Where it collapses is what the "
                           "model relies on.", Table(["Parameter", "Value"], rows)]
    if line:
        blocks.append(f"**{line}**")
    if "occlusion" in files:
        blocks.append(Image(files["occlusion"], "occlusion heatmaps"))
    return Section("Occlusion sensitivity", blocks)


# --------------------------------------------------------------------------- observations


def observations(trials: list[dict], epochs: list[dict], best: Optional[str], occ_line: str = "") -> list[str]:
    """Sentences computed from the numbers: nothing here is canned."""
    done = [t for t in trials if t.get("test_acc") is not None]
    out: list[str] = []
    if not done:
        return ["No trial finished."]
    top = max(done, key=lambda t: t["val_acc"])
    out.append(f"{top['trial']} had the best validation accuracy ({100 * top['val_acc']:.1f} %) and scored "
               f"{100 * top['test_acc']:.1f} % on the test split.")
    base = done[0]
    for t in done[1:]:
        change = _architecture_change(base, t)
        if change:
            delta = 100 * (t["test_acc"] - base["test_acc"])
            verb = "gained" if delta >= 0 else "lost"
            out.append(f"{change} ({t['trial']} against {base['trial']}) {verb} {abs(delta):.1f} points of test "
                       f"accuracy, at {t['flops'] / base['flops']:.2f}x the FLOPs and "
                       f"{t['params'] / base['params']:.2f}x the parameters.")
    gap = _overfit(epochs, top["trial"])
    if gap is not None and gap > 10:
        out.append(f"{top['trial']} ended with training accuracy {gap:.0f} points above its validation accuracy: "
                   "it memorises the training set (see the curves).")
    rates = [t for t in done if t.get("images_per_s")]
    if len(rates) > 1:
        fast, slow = max(rates, key=lambda t: t["images_per_s"]), min(rates, key=lambda t: t["images_per_s"])
        out.append(f"{fast['trial']} trained {fast['images_per_s'] / slow['images_per_s']:.1f}x faster than "
                   f"{slow['trial']} ({fast['images_per_s']:.0f} against {slow['images_per_s']:.0f} images/s).")
    if occ_line:
        out.append(occ_line)
    return out


def _architecture_change(a: dict, b: dict) -> str:
    if a["max_pool"] and not b["max_pool"] and b["stride"] > a["stride"]:
        return f"Stride-{b['stride']} downsampling instead of max pooling"
    if b["conv_layers"] > a["conv_layers"]:
        return f"A deeper model ({b['conv_layers']} conv layers instead of {a['conv_layers']})"
    if b["conv_layers"] < a["conv_layers"]:
        return f"A shallower model ({b['conv_layers']} conv layers instead of {a['conv_layers']})"
    keys = ("conv_filters", "fc_layers", "kernel_size", "lr", "optimizer", "batch_norm", "augmentation",
            "scheduler", "dropout", "weight_decay", "epochs", "batch_size")
    diff = [f"{k} {b[k] if not isinstance(b[k], list) else list(b[k])}" for k in keys if a[k] != b[k]]
    return ("Changing " + ", ".join(diff)) if diff else ""


def _overfit(epochs: list[dict], trial: str) -> Optional[float]:
    rows = [e for e in epochs if e["trial"] == trial]
    if not rows:
        return None
    last = max(rows, key=lambda e: e["epoch"])
    return 100 * (last["train_acc"] - last["val_acc"])


# --------------------------------------------------------------------------- several runs


def compare_sections(runs: list[RunData]) -> list[Section]:
    tables = [(r, {t["trial"]: t for t in r.trials}) for r in runs]
    summary = [[r.name, r.state.get("state", "?"), str(r.best), f"{r.state.get('sweep_seconds', 0):.0f} s"]
               for r in runs]
    names = list(dict.fromkeys(n for _, ts in tables for n in ts))
    cols = ["Experiment"] + [f"{r.name} test acc" for r in runs] + ["Change vs first run"] + \
           [f"{r.name} train s" for r in runs]
    rows = []
    for n in names:
        accs = [ts.get(n, {}).get("test_acc") for _, ts in tables]
        secs = [ts.get(n, {}).get("train_seconds") for _, ts in tables]
        delta = ", ".join(f"{100 * (a - accs[0]):+.1f}" for a in accs[1:] if a is not None and accs[0] is not None)
        rows.append([n] + [f"{100 * a:.2f} %" if a is not None else "-" for a in accs] + [delta or "-"]
                    + [f"{s:.0f}" if s else "-" for s in secs])
    return [Section("Runs", [Table(["Run", "State", "Best", "Sweep wall time"], summary)]),
            Section("The same experiments across runs", [Table(cols, rows, id="experiments")])]
