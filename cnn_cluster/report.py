"""Tables and figures assembled from a run folder."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from . import figures, page, search_report
from .data import PackedDataset, open_packed
from .errors import CnncError
from .results import RunDir, get_state, read_table, write_text

COLUMNS = ["Experiment", "Conv Filters", "Conv Layers", "FC Layers", "Max Pooling", "Stride", "Epochs",
           "Test Accuracy"]
GALLERY = 18  # misclassified images shown


@dataclass(frozen=True)
class Report:
    table: str  # the experiments table, for the terminal
    files: list[Path]
    state: str
    notes: list[str]
    page: Path  # report/index.html


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


def text_table(rows: list[dict], columns: list[str] = COLUMNS) -> str:
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) if rows else len(c) for c in columns}
    line = "  ".join(c.ljust(widths[c]) for c in columns)
    sep = "  ".join("-" * widths[c] for c in columns)
    body = ["  ".join(r[c].ljust(widths[c]) for c in columns) for r in rows]
    return "\n".join([line, sep, *body])


def markdown_table(rows: list[dict], columns: list[str] = COLUMNS) -> str:
    head = "| " + " | ".join(columns) + " |\n|" + "|".join("---" for _ in columns) + "|\n"
    return head + "".join("| " + " | ".join(r[c] for c in columns) + " |\n" for r in rows)


def csv_table(trials: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(COLUMNS + ["params", "flops", "val_acc", "test_acc", "train_seconds", "images_per_s", "status"])
    for t, r in zip(trials, experiments_rows(trials, None)):
        writer.writerow([r[c] for c in COLUMNS] + [t["params"], t["flops"], t["val_acc"], t["test_acc"],
                                                   t["train_seconds"], t["images_per_s"], t["status"]])
    return buf.getvalue()


def build_report(run: RunDir) -> Report:
    """Write report/experiments.{md,csv}, curves.png and misclassified.png; return the table."""
    state = get_state(run)
    trials = read_table(run.trials)
    if not trials:
        raise CnncError(f"{run.root}: no results yet (state: {state.get('state', 'unknown')}); "
                        "nothing to report until a trial finishes")
    best = state.get("best")
    rows = experiments_rows(trials, best)
    out = run.report
    files = [out / "experiments.md", out / "experiments.csv"]
    note = "\n\n`*` best validation accuracy; its test predictions feed the galleries.\n"
    write_text(files[0], f"# {run.root.name}\n\n" + markdown_table(rows) + note)
    write_text(files[1], csv_table(trials))
    named: dict[str, Path] = {}
    epochs = read_table(run.epochs)
    if epochs:
        named["curves"] = figures.curves(epochs, out / "curves.png")
    if any(t.get("test_acc") is not None for t in trials):
        named["cost"] = figures.accuracy_vs_cost(trials, out / "accuracy-vs-cost.png")
    data = _dataset(state)
    preds = read_table(run.predictions)
    if best and preds and data is not None:
        named["misclassified"] = _misclassified(preds, data, best, out / "misclassified.png")
        confusion = page.confusion_examples(preds, data, out / "confusion.png")
        if confusion:
            named["confusion"] = confusion
    notes = [] if state.get("state") == "finished" else [f"run state: {state.get('state', 'unknown')}; "
                                                         "the tables show what has finished"]
    if search_report.is_search(trials):
        search_files, search_lines = _search_outputs(run, trials, out)
        files += search_files
        named["search"] = search_files[1]
        notes += search_lines
    occ = read_table(run.occlusion)
    verdict = ""
    if occ and data is not None:
        occ_files = occlusion_figures(occ, data, out)
        files += occ_files
        named["occlusion"] = occ_files[-1]
        verdict = object_context_line(occ)
        files.append(out / "occlusion-params.md")
        write_text(files[-1], occlusion_params(occ) + (f"\n{verdict}\n" if verdict else ""))
        if verdict:
            notes.append(verdict)
    files += list(named.values())
    index, readme = page.write_page(out, f"cnnc report: {run.root.name}",
                                    page.run_sections(run, data, named, verdict))
    files += [index, readme]
    return Report(text_table(rows), files, state.get("state", "unknown"), notes, index)


def _search_outputs(run: RunDir, trials: list[dict], out: Path) -> tuple[list[Path], list[str]]:
    """report/search.md, search.png and best.yaml (each experiment's best recipe, runnable)."""
    from .config import load_config

    summaries = search_report.summarise(trials)
    md, png, best = out / "search.md", out / "search.png", out / "best.yaml"
    write_text(md, search_report.markdown(summaries))
    figures.search_scatter(trials, [search_report.values(t) for t in trials], png)
    write_text(best, search_report.best_yaml(load_config(run.config), summaries, run.root.resolve().name))
    return [md, png, best], search_report.lines(summaries) + [f"best recipes as a sweep file: {best}"]


def build_comparison(runs: list[RunDir], out: Path) -> Path:
    """One page putting several runs side by side; returns its index.html."""
    for run in runs:
        if not read_table(run.trials):
            raise CnncError(f"{run.root}: no results yet; nothing to compare")
    title = "cnnc comparison: " + ", ".join(r.root.name for r in runs)
    return page.write_page(out, title, page.compare_sections(runs))[0]


def occlusion_params(occ: list[dict]) -> str:
    """The study's parameter table for Part B."""
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
    return "| Parameter | Value |\n|---|---|\n" + "".join(f"| {k} | {v} |\n" for k, v in rows)


def object_context_line(occ: list[dict]) -> str:
    """One line: on how many images the model relied on the object, on how many on the context."""
    known = [r for r in occ if r["target_kind"] == "true" and r["correct"] and r["pointing"] is not None]
    if not known:
        return ("Object or context: no verdict, because no mapped image has a known object box "
                "(the built-in data records its boxes; for real images set data.boxes to a CSV of boxes).")
    obj = sum(r["pointing"] for r in known)
    share = sum(r["object_share"] for r in known if r["object_share"] == r["object_share"]) / len(known)
    base = sum(r["box_share"] for r in known) / len(known)
    return (f"Object or context: the largest confidence drop fell on the object in {obj} of {len(known)} images "
            f"and on the context in {len(known) - obj}; {100 * share:.0f}% of the drop lay on windows centred on "
            f"the object, which holds {100 * base:.0f}% of window positions.")


def occlusion_figures(occ: list[dict], data: PackedDataset, out: Path) -> list[Path]:
    """report/occlusion/<index>.png per image and class, and report/occlusion.png with all of them."""
    import numpy as np

    names = data.class_names
    files, grid = [], ([], [], [], [], [])
    for r in occ:
        pmap = np.asarray(r["map"], np.float32).reshape(r["map_h"], r["map_w"])
        image = np.asarray(data.images[r["index"]])
        kind = "" if r["target_kind"] == "true" else f" (map of predicted {names[r['target']]})"
        title = f"T: {names[r['true']]}  P: {names[r['pred']]}  p={r['clean_prob']:.2f}{kind}"
        suffix = "" if r["target_kind"] == "true" else "-pred"
        files.append(figures.occlusion_panel(image, pmap, r["clean_prob"], r["window"], r["stride"], title,
                                             out / "occlusion" / f"{r['index']}{suffix}.png", r["box"]))
        for lst, v in zip(grid, (image, pmap, r["clean_prob"], title.replace("  P:", "\nP:").replace(" (map", "\n(map"), r["box"])):
            lst.append(v)
    files.append(figures.occlusion_grid(grid[0], grid[1], grid[2], grid[3], occ[0]["window"], occ[0]["stride"],
                                        out / "occlusion.png", grid[4]))
    return files


def _dataset(state: dict) -> Optional[PackedDataset]:
    root = state.get("data_root") or (state.get("dataset") or {}).get("root")
    try:
        return open_packed(Path(root)) if root else None
    except CnncError:
        return None


def _misclassified(preds: list[dict], data: PackedDataset, best: str, path: Path) -> Path:
    wrong = sorted((p for p in preds if p["pred"] != p["true"]), key=lambda p: -p["p_pred"])[:GALLERY]
    images = data.images[[p["index"] for p in wrong]] if wrong else []
    names = data.class_names
    titles = [f"T: {names[p['true']]}\nP: {names[p['pred']]} ({100 * p['p_pred']:.0f}%)" for p in wrong]
    total = sum(p["pred"] != p["true"] for p in preds)
    return figures.image_grid(images, titles, path,
                              f"Misclassified test images of {best} ({total} of {len(preds)}; most confident first)")
