"""docs/errors.md's rows for the tests that check them outside test_errors.py's catalogue cases: each
such test compares the line cnnc gave with the row's message, word for word."""

from __future__ import annotations

import re
from pathlib import Path

ERRORS = Path(__file__).resolve().parent.parent / "docs" / "errors.md"


def documented(case: str, **names: str) -> str:
    """Row ``case``'s message (the 'what cnnc says' cell without its backticks), each placeholder in
    capitals (``FILE``, ``ADDRESS``, ...) replaced by ``names[placeholder]``."""
    for line in ERRORS.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0] == case:
            message = cells[3].strip("`")
            for name, value in names.items():
                message = re.sub(rf"\b{name}\b", lambda _: value, message)
            return message
    raise KeyError(f"docs/errors.md has no row {case!r}")
