"""The report page of a run (or of several runs side by side), as HTML and Markdown.

Sections are built once as plain blocks (paragraphs, tables, images, lists) and
rendered twice: ``index.html`` is self-contained (figures inlined as data URIs,
no network needed, readable on a phone and in print); ``README.md`` links the
PNGs beside it, for a git repository.
"""

from __future__ import annotations

import base64
import html
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import numpy as np

from . import figures, search_report
from .data import PackedDataset
from .results import RunDir, get_state, read_table, write_text


@dataclass
class Table:
    columns: list[str]
    rows: list[list[str]]
    mark: Optional[int] = None  # row to highlight (the best trial)
    id: str = ""


@dataclass
class Image:
    path: Path
    alt: str


Block = Union[str, Table, Image, list]


@dataclass
class Section:
    title: str
    blocks: list[Block] = field(default_factory=list)


# --------------------------------------------------------------------------- one run


def run_sections(run: RunDir, data: Optional[PackedDataset], files: dict[str, Path], occ_line: str) -> list[Section]:
    state, trials = get_state(run), read_table(run.trials)
    epochs, preds, occ = read_table(run.epochs), read_table(run.predictions), read_table(run.occlusion)
    best = state.get("best")
    names = data.class_names if data is not None else None
    out = [_what_was_run(run, state), _experiments(trials, best)]
    if search_report.is_search(trials):
        out.append(_search(trials, files.get("search")))
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
    if occ:
        out.append(_occlusion(occ, files, occ_line))
    out.append(Section("Observations", [observations(trials, epochs, best, occ_line)]))
    return out


def _what_was_run(run: RunDir, state: dict) -> Section:
    ds, hw, v = state.get("dataset") or {}, state.get("hardware") or {}, state.get("versions") or {}
    counts = ds.get("counts") or {}
    rows = [
        ["Run", run.root.name],
        ["State", state.get("state", "unknown")],
        ["Dataset", f"{ds.get('layout', '?')} at {ds.get('root', '?')}"],
        ["Images", f"{sum(counts.values())} ({', '.join(f'{k} {v}' for k, v in counts.items())}), "
                   f"{ds.get('classes', '?')} classes, {ds.get('image_size', '?')}x{ds.get('image_size', '?')}"],
        ["Split rule", str(ds.get("split_rule"))],
        ["Hardware", f"{hw.get('nodes', '?')} node(s), {hw.get('cpus', '?')} CPUs, {hw.get('gpus', '?')} GPUs "
                     f"({hw.get('host', '?')}, {hw.get('machine', '?')})"],
        ["Versions", ", ".join(f"{k} {val}" for k, val in v.items())],
        ["Precision", ", ".join(f"{k} {val}" for k, val in (state.get("precision") or {}).items()) or "?"],
        ["Wall time", f"sweep {state.get('sweep_seconds', 0):.0f} s"
                      + (f", occlusion {state['occlusion_seconds']:.0f} s" if "occlusion_seconds" in state else "")],
        ["Config", _config_summary(run)],
    ]
    return Section("What was run", [Table(["", ""], rows)])


def _config_summary(run: RunDir) -> str:
    """The sweep's defaults and resources in one line (config.yaml in the run folder has it all)."""
    import yaml

    try:
        cfg = yaml.safe_load(run.config.read_text())
    except (OSError, yaml.YAMLError):
        return "config.yaml unreadable"
    t, r = cfg.get("train", {}), cfg.get("resources", {})
    return (f"{cfg.get('name')}: {len(cfg.get('experiments') or [])} experiments; defaults {t.get('optimizer')} "
            f"lr {t.get('lr')}, batch {t.get('batch_size')}, {t.get('epochs')} epochs, scheduler {t.get('scheduler')}, "
            f"augmentation {t.get('augmentation')}, batch norm {t.get('batch_norm')}, dropout {t.get('dropout')}; "
            f"{r.get('workers_per_trial')} worker(s) x {r.get('cpus_per_worker')} CPU per trial "
            "(config.yaml in the run folder reruns any row)")


def _experiments(trials: list[dict], best: Optional[str]) -> Section:
    cols = ["Experiment", "Conv Filters", "Conv Layers", "FC Layers", "Max Pooling", "Stride", "Epochs",
            "Test Accuracy", "Val Accuracy", "Params", "MFLOPs", "Images/s"]
    rows, mark = [], None
    for i, t in enumerate(trials):
        mark = i if t["trial"] == best else mark
        acc = (lambda k: f"{100 * t[k]:.2f} %" if t.get(k) is not None else t["status"])
        rows.append([t["trial"], str(list(t["conv_filters"])), str(t["conv_layers"]), str(list(t["fc_layers"])),
                     "yes" if t["max_pool"] else "no", str(t["stride"]), str(t["epochs"]), acc("test_acc"),
                     acc("val_acc"), f"{t['params'] / 1e6:.2f}M", f"{t['flops'] / 1e6:.0f}",
                     f"{t['images_per_s']:.0f}" if t.get("images_per_s") else "-"])
    note = "The highlighted row has the best validation accuracy; its test predictions feed the sections below."
    return Section("Experiments", [Table(cols, rows, mark, id="experiments"), note])


def _search(trials: list[dict], image: Optional[Path]) -> Section:
    """Per experiment: its best recipe (the one trial tested), its top trials, what ASHA saved."""
    summaries = search_report.summarise(trials)
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
    from .report import occlusion_params

    md = occlusion_params(occ).strip().splitlines()[2:]
    rows = [[c.strip() for c in r.strip("|").split("|")] for r in md]
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


def compare_sections(runs: list[RunDir]) -> list[Section]:
    tables = [(r, get_state(r), {t["trial"]: t for t in read_table(r.trials)}) for r in runs]
    summary = [[r.root.name, s.get("state", "?"), str(s.get("best")), f"{s.get('sweep_seconds', 0):.0f} s"]
               for r, s, _ in tables]
    names = list(dict.fromkeys(n for _, _, ts in tables for n in ts))
    cols = ["Experiment"] + [f"{r.root.name} test acc" for r in runs] + ["Change vs first run"] + \
           [f"{r.root.name} train s" for r in runs]
    rows = []
    for n in names:
        accs = [ts.get(n, {}).get("test_acc") for _, _, ts in tables]
        secs = [ts.get(n, {}).get("train_seconds") for _, _, ts in tables]
        delta = ", ".join(f"{100 * (a - accs[0]):+.1f}" for a in accs[1:] if a is not None and accs[0] is not None)
        rows.append([n] + [f"{100 * a:.2f} %" if a is not None else "-" for a in accs] + [delta or "-"]
                    + [f"{s:.0f}" if s else "-" for s in secs])
    return [Section("Runs", [Table(["Run", "State", "Best", "Sweep wall time"], summary)]),
            Section("The same experiments across runs", [Table(cols, rows, id="experiments")])]


# --------------------------------------------------------------------------- rendering


def write_page(out: Path, title: str, sections: list[Section]) -> tuple[Path, Path]:
    """report/index.html (self-contained) and report/README.md."""
    index, readme = out / "index.html", out / "README.md"
    write_text(index, to_html(title, sections))
    write_text(readme, to_markdown(title, sections, out))
    return index, readme


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:0 auto;padding:1rem;
color:#1d2330;line-height:1.45}
h1{font-size:1.6rem;margin:.2rem 0 1rem}h2{font-size:1.25rem;border-bottom:2px solid #e3e7ef;padding-bottom:.2rem;
margin-top:2rem}
table{border-collapse:collapse;margin:.6rem 0;font-size:.9rem;display:block;overflow-x:auto;max-width:100%}
th,td{border:1px solid #d5dae3;padding:.3rem .55rem;text-align:left;white-space:nowrap}th{background:#f2f4f8}
tr.best td{background:#fff4cc;font-weight:600}img{max-width:100%;height:auto;border:1px solid #e3e7ef;margin:.4rem 0}
nav a{margin-right:.8rem;font-size:.9rem}li{margin:.25rem 0}
@media print{nav{display:none}h2{break-after:avoid}img,table{break-inside:avoid}body{max-width:none}}
"""


def to_html(title: str, sections: list[Section]) -> str:
    nav = "".join(f'<a href="#s{i}">{html.escape(s.title)}</a>' for i, s in enumerate(sections))
    body = "".join(f'<section id="s{i}"><h2>{html.escape(s.title)}</h2>{"".join(_html_block(b) for b in s.blocks)}'
                   "</section>" for i, s in enumerate(sections))
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width,initial-scale=1'><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1><nav>{nav}</nav>{body}</body></html>\n")


def _html_block(b: Block) -> str:
    if isinstance(b, Table):
        head = "".join(f"<th>{html.escape(c)}</th>" for c in b.columns) if any(b.columns) else ""
        rows = "".join(f"<tr{' class=best' if i == b.mark else ''}>" + "".join(f"<td>{html.escape(c)}</td>" for c in r)
                       + "</tr>" for i, r in enumerate(b.rows))
        ident = f" id='{b.id}'" if b.id else ""
        return f"<table{ident}>{'<thead><tr>' + head + '</tr></thead>' if head else ''}<tbody>{rows}</tbody></table>"
    if isinstance(b, Image):
        data = base64.b64encode(Path(b.path).read_bytes()).decode()
        return f"<img alt='{html.escape(b.alt)}' src='data:image/png;base64,{data}'>"
    if isinstance(b, list):
        return "<ul>" + "".join(f"<li>{html.escape(x)}</li>" for x in b) + "</ul>"
    text = html.escape(b)
    if text.startswith("**") and text.endswith("**"):
        return f"<p><strong>{text[2:-2]}</strong></p>"
    return f"<p>{text}</p>"


def to_markdown(title: str, sections: list[Section], base: Path) -> str:
    parts = [f"# {title}\n"]
    for s in sections:
        parts.append(f"\n## {s.title}\n")
        for b in s.blocks:
            parts.append(_md_block(b, base))
    return "\n".join(parts) + "\n"


def _md_block(b: Block, base: Path) -> str:
    if isinstance(b, Table):
        cols = [c or " " for c in b.columns]
        lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
        for i, r in enumerate(b.rows):
            cells = [f"**{c}**" if i == b.mark else c for c in r]
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        return "\n".join(lines) + "\n"
    if isinstance(b, Image):
        try:
            rel = Path(b.path).relative_to(base)
        except ValueError:
            rel = Path(b.path)
        return f"![{b.alt}]({rel.as_posix()})\n"
    if isinstance(b, list):
        return "\n".join(f"- {x}" for x in b) + "\n"
    return b + "\n"


def confusion_examples(preds: list[dict], data: PackedDataset, path: Path) -> Optional[Path]:
    """One misclassified example per confused pair, for the confusion section."""
    pairs = confused_pairs(preds)
    picks = []
    for (a, b), _ in pairs:
        ex = next((p for p in preds if {p["true"], p["pred"]} == {a, b} and p["true"] != p["pred"]), None)
        if ex is not None:
            picks.append(ex)
    if not picks:
        return None
    names = data.class_names
    images = np.asarray(data.images[[p["index"] for p in picks]])
    titles = [f"T: {names[p['true']]}\nP: {names[p['pred']]}" for p in picks]
    return figures.image_grid(images, titles, path, "One example per confused pair", cols=5)
