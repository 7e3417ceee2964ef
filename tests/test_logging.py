"""One ``cnnc`` logger hierarchy: the library logs, the CLI's --quiet/--verbose decide what shows,
and on a terminal the live block stays below every logged line."""

from __future__ import annotations

import io
import logging

from typer.testing import CliRunner

from cnn_cluster import logs
from cnn_cluster.cli import app
from cnn_cluster.data.miniimagenet import prepare_cached
from cnn_cluster.config import DataConfig
from minifixtures import write_csv


def _prepare(tmp_path, *flags: str) -> str:
    src = write_csv(tmp_path / "src")
    result = CliRunner().invoke(app, [*flags, "data", "prepare", str(src), "--out", str(tmp_path / "p")])
    assert result.exit_code == 0, result.output
    return result.output


def test_quiet_and_verbose_choose_what_the_cli_shows(tmp_path):
    normal = _prepare(tmp_path / "n")
    assert "decoding [" in normal and "packed 60 of 60 images" in normal and "csv layout" not in normal
    quiet = _prepare(tmp_path / "q", "--quiet")
    assert "decoding" not in quiet and "packed 60 of 60 images" in quiet  # the result stays
    verbose = _prepare(tmp_path / "v", "--verbose")
    assert "csv layout, 60 images in 5 classes, 0 entries skipped" in verbose and "decoding [" in verbose


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_live_block_stays_below_logged_lines():
    tty = _Tty()
    handler = logs.configure(stream=tty)
    try:
        assert logs.live_block() is handler
        handler.show(["trial a: epoch 1", "trial b: epoch 2"])
        logs.get("sweep").info("a: started")
        up2 = "\x1b[1A\x1b[2K" * 2
        assert tty.getvalue() == ("trial a: epoch 1\ntrial b: epoch 2\n" + up2 + "a: started\n"
                                  "trial a: epoch 1\ntrial b: epoch 2\n")
        logs.configure(logs.QUIET, stream=tty)
        assert logs.live_block() is None  # --quiet: no live lines either
    finally:
        logs.configure()


def test_library_lines_go_to_the_cnnc_logger_not_the_terminal(tmp_path, capsys):
    """Imported as a library (no configure): INFO reaches a handler the caller attaches, not stdout."""
    logger = logging.getLogger("cnnc")
    saved = logger.handlers[:], logger.level, logger.propagate
    logger.handlers[:] = []
    records: list[logging.LogRecord] = []
    catcher = logging.Handler()
    catcher.emit = records.append
    logger.addHandler(catcher)
    logger.setLevel(logging.INFO)
    try:
        src = write_csv(tmp_path / "src")
        prepare_cached(src, DataConfig(source="miniimagenet", root=str(src)), out=tmp_path / "p")
    finally:
        logger.handlers[:], logger.level, logger.propagate = saved
    names = {r.name for r in records}
    assert names == {"cnnc.data"} and any("prepared" in r.getMessage() for r in records)
    assert capsys.readouterr() == ("", "")
