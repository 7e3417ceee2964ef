"""The reference study's Table 1: its three architectures and the test accuracy it reports for each.

A trial is matched to a study row by its architecture (not its name), so a renamed or searched
experiment of the same shape is still compared with the study. No Ray, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence


@dataclass(frozen=True)
class StudyRow:
    name: str
    conv_filters: tuple[int, ...]
    fc_layers: tuple[int, ...]
    max_pool: bool
    stride: int
    epochs: int  # what the study trained it for
    test_acc: Optional[float]  # as a fraction; None where the study gives no figure
    claim: str  # what the study says, as a reader quotes it


TABLE1 = (
    StudyRow("exp1", (32, 64), (128,), True, 1, 10, 0.4166, "41.66 %"),
    StudyRow("exp2", (32, 64, 128), (256, 128), True, 1, 15, 0.432, "43.2 %"),
    StudyRow("exp3", (32, 64), (128,), False, 2, 20, None, "below exp 2"),
)
BELOW = "exp2"  # exp 3's only figure: below this row's accuracy


def study_row(conv_filters: Sequence[int], fc_layers: Sequence[int], max_pool: bool, stride: int) -> Optional[StudyRow]:
    """The study's row of this architecture, or None."""
    key = (tuple(conv_filters), tuple(fc_layers), bool(max_pool), int(stride))
    return next((r for r in TABLE1 if (r.conv_filters, r.fc_layers, r.max_pool, r.stride) == key), None)


def comparison(row: StudyRow, test_acc: float, reference: Optional[float]) -> str:
    """``41.66 % (-3.21)`` against a figure; for exp 3 ``below exp 2: yes (-4.10)``, where
    ``reference`` is this run's own accuracy of the study's exp 2 architecture (None: not run)."""
    if row.test_acc is not None:
        return f"{row.claim} ({100 * (test_acc - row.test_acc):+.2f})"
    if reference is None:
        return row.claim
    verdict = "yes" if test_acc < reference else "no"
    return f"{row.claim}: {verdict} ({100 * (test_acc - reference):+.2f})"


def reference_acc(trials: Sequence[dict]) -> Optional[float]:
    """This run's best test accuracy of the architecture exp 3 is compared with (the study's exp 2)."""
    target = next(r for r in TABLE1 if r.name == BELOW)
    accs = [t["test_acc"] for t in trials if t.get("test_acc") is not None
            and study_row(t["conv_filters"], t["fc_layers"], t["max_pool"], t["stride"]) == target]
    return max(accs, default=None)
