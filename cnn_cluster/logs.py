"""The ``cnnc`` logger hierarchy: library modules log, an entry point decides where lines go.

Every module logs to ``cnnc.<stage>`` (``get("sweep")``) and never prints. An entry point (the
CLI, ``jobs/sweep.py``) calls :func:`configure` once: without it, as when cnnc is imported as a
library, only warnings reach stderr (Python's last-resort handler) and a caller can attach its own
handlers to ``cnnc``. Lines go out bare, without level or time prefix, because the progress lines
carry their own clock and SLURM logs are read by people; on a terminal the handler keeps a block of
live lines (one per running trial, or a decoding bar) at the bottom, erased and redrawn around
every line logged above it.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Optional, TextIO

ROOT = "cnnc"
QUIET, NORMAL, VERBOSE = logging.WARNING, logging.INFO, logging.DEBUG


def get(name: str) -> logging.Logger:
    return logging.getLogger(f"{ROOT}.{name}")


class TerminalHandler(logging.StreamHandler):
    """A stream handler that, on a terminal, keeps :meth:`show`'s lines below everything logged."""

    def __init__(self, stream: TextIO):
        super().__init__(stream)
        self.block: list[str] = []
        self.live = bool(getattr(stream, "isatty", lambda: False)())

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            with self.lock:
                self.stream.write(self._erase() + text + "\n" + self._draw())
                self.stream.flush()
        except Exception:  # logging's contract: a broken stream never breaks the caller
            self.handleError(record)

    def show(self, lines: list[str]) -> None:
        """Replace the live block (a terminal only; elsewhere callers log periodic lines instead)."""
        if not self.live or lines == self.block:
            return
        with self.lock:
            erase, self.block = self._erase(), list(lines)
            self.stream.write(erase + self._draw())
            self.stream.flush()

    def _erase(self) -> str:
        return "".join("\x1b[1A\x1b[2K" for _ in self.block)  # up one line, clear it

    def _draw(self) -> str:
        width = _width(self.stream)
        return "".join(f"{line[:width - 1]}\n" for line in self.block)


def configure(level: int = NORMAL, stream: Optional[TextIO] = None) -> TerminalHandler:
    """One handler on ``cnnc`` (replacing an earlier one), writing to ``stream`` (stdout)."""
    logger = logging.getLogger(ROOT)
    for h in [h for h in logger.handlers if isinstance(h, TerminalHandler)]:
        logger.removeHandler(h)
    handler = TerminalHandler(stream or sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False  # the lines are ours to place; a root handler would print them twice
    return handler


def live_block() -> Optional[TerminalHandler]:
    """The configured handler when it writes to a terminal and lines at INFO are shown, else None."""
    logger = logging.getLogger(ROOT)
    if not logger.isEnabledFor(logging.INFO):
        return None
    return next((h for h in logger.handlers if isinstance(h, TerminalHandler) and h.live), None)


def _width(out: TextIO) -> int:
    try:
        return os.get_terminal_size(out.fileno()).columns
    except (OSError, ValueError, AttributeError):
        return 120
