"""A ``cnnc submit`` driver in its own process and session, for the tests that signal or kill it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

CNNC = str(Path(sys.executable).with_name("cnnc"))


def start(cfg_path: Path, *args: str, **env_vars: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **env_vars}
    return subprocess.Popen([CNNC, "submit", str(cfg_path), "--no-dashboard", "--no-report", "--num-cpus", "2", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)


def wait_for(proc: subprocess.Popen, needle: str, timeout: float = 240) -> list[str]:
    lines, end = [], time.time() + timeout
    while time.time() < end:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
        lines.append(line)
        if needle in line:
            return lines
    raise AssertionError(f"never saw {needle!r}:\n{''.join(lines)}")


def cleanup(proc: subprocess.Popen) -> None:
    """Whatever the driver left behind in its own session (we started it), by process group."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
