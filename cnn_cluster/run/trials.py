"""The rules over a run's trials, each in one place: a trial's status, the best trial, the counts.

Progress lines, the sweep's rows, ``cnnc submit``'s last line, the report and the search summary all
ask here, so they cannot disagree.
"""

from __future__ import annotations

from typing import Any, Iterable, Optional

from .reports import EpochReport, FinalReport, parse

STATUSES = ("finished", "stopped", "failed")  # stopped: ended early by ASHA, in a search


def trial_status(error: Any, last: Optional[dict]) -> str:
    """A trial's ``status``: finished (its final report came), stopped (ASHA ended it after an
    epoch), else failed; from Tune's error and the trial's last reported metrics."""
    report = parse(last)
    if error is None and isinstance(report, FinalReport):
        return "finished"
    if error is None and isinstance(report, EpochReport):
        return "stopped"
    return "failed"


def best_trial(rows: Iterable[dict], tested: bool = True) -> Optional[dict]:
    """The finished trial with the best validation accuracy (test accuracy breaks a tie); with
    ``tested`` only among those evaluated on the test split. None where no trial qualifies."""
    done = [t for t in rows if t.get("status") == "finished" and t.get("val_acc") is not None
            and (not tested or t.get("test_acc") is not None)]
    return max(done, key=lambda t: (t["val_acc"], t.get("test_acc") or 0.0), default=None)


def by_experiment(trials: Iterable[dict]) -> dict[str, list[dict]]:
    """The trials of each experiment, in order (a search has several per experiment)."""
    groups: dict[str, list[dict]] = {}
    for t in trials:
        groups.setdefault(t.get("experiment") or t["trial"], []).append(t)
    return groups


def count_statuses(statuses: Iterable[str], shown: tuple[str, ...] = STATUSES) -> dict[str, int]:
    """How many trials are in each of ``shown``; "stopped" only where some trial was (a sweep
    without a search never has one)."""
    states = list(statuses)
    return {s: states.count(s) for s in shown if s != "stopped" or "stopped" in states}


def counts_text(counts: dict[str, int]) -> str:
    """``4 finished, 8 stopped by ASHA, 0 failed``."""
    return ", ".join(f"{n} {s}" + (" by ASHA" if s == "stopped" else "") for s, n in counts.items())
