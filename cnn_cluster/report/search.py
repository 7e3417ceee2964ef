"""What a recipe search found, per experiment: its best recipe, its top trials, what ASHA saved.

Plain functions of the trial rows (``trials.parquet``); report.py writes them out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Optional

from ..config import Experiment, SweepConfig, best_recipes_yaml, with_values
from ..run.trials import best_trial, by_experiment

TOP = 5  # trials listed per experiment


@dataclass(frozen=True)
class GroupSummary:
    experiment: str
    best: Optional[dict]  # the trial row with the best validation accuracy (the one tested)
    top: list[dict]  # best first, at most TOP
    trials: int
    stopped: int
    failed: int
    epochs_run: int
    epochs_planned: int  # every trial trained to the end

    @property
    def epochs_saved(self) -> int:
        return self.epochs_planned - self.epochs_run


def is_search(trials: list[dict]) -> bool:
    return any(t.get("searched") for t in trials)


def values(trial: dict) -> dict:
    return json.loads(trial.get("searched") or "{}")


def summarise(trials: list[dict]) -> list[GroupSummary]:
    out = []
    for name, rows in by_experiment(trials).items():
        ranked = sorted((t for t in rows if t.get("val_acc") is not None), key=lambda t: -t["val_acc"])
        out.append(GroupSummary(
            name, best_trial(rows), ranked[:TOP], len(rows),
            sum(t["status"] == "stopped" for t in rows), sum(t["status"] == "failed" for t in rows),
            sum(t.get("epochs_run") or 0 for t in rows), sum(t["epochs"] for t in rows)))
    return out


def recipe_text(trial: dict) -> str:
    return ", ".join(f"{k} {_fmt(v)}" for k, v in values(trial).items())


def _fmt(value: object) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def lines(summaries: list[GroupSummary]) -> list[str]:
    """One line per experiment, for the terminal and the page."""
    out = []
    for g in summaries:
        saved = f"ASHA stopped {g.stopped} of {g.trials} trials, saving {g.epochs_saved} of {g.epochs_planned} epochs"
        if g.best is None:
            out.append(f"{g.experiment}: no trial finished; {saved}")
            continue
        out.append(f"{g.experiment}: best recipe {g.best['trial']} ({recipe_text(g.best)}): val "
                   f"{100 * g.best['val_acc']:.2f} %, test {100 * g.best['test_acc']:.2f} %; {saved}")
    return out


def top_rows(g: GroupSummary) -> list[list[str]]:
    """The top trials of one experiment: name, state, epochs, validation accuracy, drawn values."""
    return [[t["trial"], t["status"], f"{t.get('epochs_run') or 0}/{t['epochs']}", f"{100 * t['val_acc']:.2f} %",
             f"{100 * t['test_acc']:.2f} %" if t.get("test_acc") is not None else "-", recipe_text(t)]
            for t in g.top]


TOP_COLUMNS = ["Trial", "State", "Epochs", "Val Accuracy", "Test Accuracy", "Recipe"]


def markdown(summaries: list[GroupSummary]) -> str:
    parts = ["# Recipe search\n", *(f"- {line}" for line in lines(summaries)), ""]
    for g in summaries:
        parts += [f"\n## {g.experiment}\n", "| " + " | ".join(TOP_COLUMNS) + " |",
                  "|" + "---|" * len(TOP_COLUMNS)]
        parts += ["| " + " | ".join(r) + " |" for r in top_rows(g)]
    return "\n".join(parts) + "\n"


def best_recipes(cfg: SweepConfig, summaries: list[GroupSummary]) -> list[Experiment]:
    """Each experiment's best recipe, named after the experiment: its base plus the drawn values."""
    bases = {e.name: e for e in cfg.resolved_experiments()}
    return [with_values(bases[g.experiment], values(g.best), name=g.experiment)
            for g in summaries if g.best is not None and g.experiment in bases]


def best_yaml(cfg: SweepConfig, summaries: list[GroupSummary], run_name: str) -> str:
    header = (f"# Each experiment's best recipe from the search in {run_name}, by validation accuracy.\n"
              f"# Runnable as it is: cnnc submit best.yaml\n")
    named = cfg.model_copy(update={"name": f"{cfg.name}-best"})
    return best_recipes_yaml(named, best_recipes(cfg, summaries), header)
