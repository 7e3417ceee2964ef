"""A run's report folder: one read of the run, its tables and figures, then the page.

build.py reads (``run.read.read_run``, once) and draws; sections.py builds the page's sections
from what was read; page.py renders them.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from ..data import PackedDataset
from ..errors import CnncError
from ..run.io import write_text
from ..run.paths import RunDir
from ..run.read import RunData, open_run_dataset, read_run
from . import attribution, draw_boxes, figures, page
from . import search as search_report
from . import sections
from .sections import COLUMNS, experiments_rows, object_context_line, occlusion_param_rows

GALLERY = 18  # misclassified images shown


@dataclass(frozen=True)
class Report:
    table: str  # the experiments table, for the terminal
    files: list[Path]
    state: str
    notes: list[str]
    page: Path  # report/index.html


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
    """Write report/: the tables, figures, search outputs and the page; return the table."""
    rd = read_run(run)
    state, trials, best = rd.state, rd.trials, rd.best
    if not trials:
        raise CnncError(f"{run.root}: no results yet (state: {state.get('state', 'unknown')}); "
                        "nothing to report until a trial finishes")
    rows = experiments_rows(trials, best)
    out = run.report
    files = [out / "experiments.md", out / "experiments.csv"]
    note = "\n\n`*` best validation accuracy; its test predictions feed the galleries.\n"
    write_text(files[0], f"# {rd.name}\n\n" + markdown_table(rows) + note)
    write_text(files[1], csv_table(trials))
    try:
        data: Optional[PackedDataset] = open_run_dataset(run, state, boxes=False)
    except CnncError:  # moved or deleted since: the report goes on without pictures of it
        data = None
    named = _figures(rd, data, out)
    notes = [] if state.get("state") == "finished" else [f"run state: {state.get('state', 'unknown')}; "
                                                         "the tables show what has finished"]
    search = search_report.summarise(trials) if search_report.is_search(trials) else []
    if search:
        search_files, search_lines = _search_outputs(rd, search, out)
        files += search_files
        named["search"] = search_files[1]
        notes += search_lines
    verdict = ""
    occ = [r for r in rd.occlusion if r["method"] == "occlusion"]
    if occ and data is not None:
        occ_files = occlusion_figures(occ, data, out)
        files += occ_files
        named["occlusion"] = occ_files[-1]
        verdict = object_context_line(occ)
        files.append(out / "occlusion-params.md")
        write_text(files[-1], markdown_table([dict(zip(PARAM_COLUMNS, r)) for r in occlusion_param_rows(occ)],
                                             PARAM_COLUMNS) + (f"\n{verdict}\n" if verdict else ""))
        if verdict:
            notes.append(verdict)
    compared = _attribution(rd, data, out, named) if rd.occlusion else None
    if compared is not None and isinstance(compared.blocks[-1], list):
        notes += compared.blocks[-1]  # the comparison's observations
    files += list(named.values())
    names = data.class_names if data is not None else None
    index, readme = page.write_page(out, f"cnnc report: {rd.name}",
                                    sections.run_sections(rd, names, named, verdict, search, compared))
    files += [index, readme]
    return Report(text_table(rows), files, state.get("state", "unknown"), notes, index)


PARAM_COLUMNS = ["Parameter", "Value"]


def _figures(rd: RunData, data: Optional[PackedDataset], out: Path) -> dict[str, Path]:
    """Curves, accuracy against cost, and the best model's galleries: what the run's tables allow."""
    named: dict[str, Path] = {}
    if rd.epochs:
        named["curves"] = figures.curves(rd.epochs, out / "curves.png")
    if any(t.get("test_acc") is not None for t in rd.trials):
        named["cost"] = figures.accuracy_vs_cost(rd.trials, out / "accuracy-vs-cost.png")
    if rd.best and rd.predictions and data is not None:
        named["misclassified"] = _misclassified(rd.predictions, data, rd.best, out / "misclassified.png")
        confusion = confusion_examples(rd.predictions, data, out / "confusion.png")
        if confusion:
            named["confusion"] = confusion
    return named


def _search_outputs(rd: RunData, summaries: list[search_report.GroupSummary],
                    out: Path) -> tuple[list[Path], list[str]]:
    """report/search.md, search.png and best.yaml (each experiment's best recipe, runnable)."""
    if rd.config is None:
        raise CnncError(f"{rd.run.config}: does not validate any more; cannot write best.yaml from it")
    md, png, best = out / "search.md", out / "search.png", out / "best.yaml"
    write_text(md, search_report.markdown(summaries))
    figures.search_scatter(rd.trials, [search_report.values(t) for t in rd.trials], png)
    write_text(best, search_report.best_yaml(rd.config, summaries, rd.run.root.resolve().name))
    return [md, png, best], search_report.lines(summaries) + [f"best recipes as a sweep file: {best}"]


def build_comparison(runs: list[RunDir], out: Path) -> Path:
    """One page putting several runs side by side; returns its index.html."""
    read = [read_run(r) for r in runs]
    for rd in read:
        if not rd.trials:
            raise CnncError(f"{rd.run.root}: no results yet; nothing to compare")
    title = "cnnc comparison: " + ", ".join(rd.name for rd in read)
    return page.write_page(out, title, sections.compare_sections(read))[0]


def occlusion_figures(occ: list[dict], data: PackedDataset, out: Path) -> list[Path]:
    """report/occlusion/<index>.png per image and class, and report/occlusion.png with all of them."""
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


def _attribution(rd: RunData, data: Optional[PackedDataset], out: Path,
                 named: dict[str, Path]) -> Optional[page.Section]:
    """The methods-compared section, where the run has more than occlusion maps or their checks."""
    occ = rd.occlusion
    checked = any(r.get("deletion") or r.get("sanity_rho") for r in occ)
    if len(attribution.methods_of(occ)) < 2 and not checked:
        return None
    if data is not None:
        named["methods"] = methods_figure(occ, data, out / "methods.png")
        f = attribution.faithfulness(occ)
        if f:
            named["faithfulness"] = figures.faithfulness_curves(
                {m: _mean_curves(occ, m) for m in f}, attribution.LABELS, out / "faithfulness.png")
    boxed = any(r.get("pointing") is not None for r in occ)
    drawing = None if boxed or data is None else _drawing(occ, data, rd.run.root)
    return attribution.section(occ, named, drawing)


def _mean_curves(occ: list[dict], m: str) -> tuple[np.ndarray, np.ndarray]:
    if m in ("random", "centre"):
        first = attribution.methods_of(occ)[0]
        rows = [r for r in occ if r["method"] == first and r["target_kind"] == "true" and r.get(f"{m}_deletion")]
        return (np.mean([r[f"{m}_deletion"] for r in rows], 0), np.mean([r[f"{m}_insertion"] for r in rows], 0))
    rows = [r for r in occ if r["method"] == m and r["target_kind"] == "true" and r.get("deletion")]
    return np.mean([r["deletion"] for r in rows], 0), np.mean([r["insertion"] for r in rows], 0)


def methods_figure(occ: list[dict], data: PackedDataset, path: Path) -> Path:
    """report/methods.png: per image (true class) the photograph and every method's map."""
    names, by_image = data.class_names, {}
    for r in occ:
        if r["target_kind"] == "true":
            by_image.setdefault(r["index"], {})[r["method"]] = r
    images, maps, titles, boxes = [], [], [], []
    for index, rows in by_image.items():
        first = next(iter(rows.values()))
        images.append(np.asarray(data.images[index]))
        maps.append({m: np.asarray(r["map"], np.float32).reshape(r["map_h"], r["map_w"]) for m, r in rows.items()})
        titles.append(f"T: {names[first['true']]}\nP: {names[first['pred']]} p={first['clean_prob']:.2f}")
        boxes.append(first.get("box"))
    return figures.methods_grid(images, maps, titles, attribution.LABELS, occ[0]["window"], occ[0]["stride"], path,
                                boxes)


def _drawing(occ: list[dict], data: PackedDataset, run_root: Path):
    from ..data.boxes import original_size

    source = Path(data.info.get("source") or data.root)
    picks = []
    for index in dict.fromkeys(r["index"] for r in occ):
        name = data.sources[index]
        picks.append((name, np.asarray(data.images[index]), f"{data.class_names[data.labels[index]]} ({name})",
                      original_size(source / name, data.image_size)))
    return draw_boxes.block(picks, str(run_root))


def _misclassified(preds: list[dict], data: PackedDataset, best: str, path: Path) -> Path:
    wrong = sorted((p for p in preds if p["pred"] != p["true"]), key=lambda p: -p["p_pred"])[:GALLERY]
    images = data.images[[p["index"] for p in wrong]] if wrong else []
    names = data.class_names
    titles = [f"T: {names[p['true']]}\nP: {names[p['pred']]} ({100 * p['p_pred']:.0f}%)" for p in wrong]
    total = sum(p["pred"] != p["true"] for p in preds)
    return figures.image_grid(images, titles, path,
                              f"Misclassified test images of {best} ({total} of {len(preds)}; most confident first)")


def confusion_examples(preds: list[dict], data: PackedDataset, path: Path) -> Optional[Path]:
    """One misclassified example per confused pair, for the confusion section."""
    pairs = sections.confused_pairs(preds)
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
