"""A run's state in run.json (running, occlusion, interrupted, finished, failed), with the driver
process that an active state names, so a killed run does not read 'running' forever.
"""

from __future__ import annotations

import socket
from typing import Any

import psutil

from .io import read_json, write_json
from .paths import RunDir

ACTIVE = ("running", "occlusion")


def set_state(run: RunDir, state: str, **extra: Any) -> None:
    """Record running / interrupted / finished / failed, keeping earlier fields.

    An active state names this process as the run's driver, so readers can tell a run whose
    driver was killed (SIGKILL, the OOM killer, Ray taking it down with its node) from a live one.
    """
    current = read_json(run.state) if run.state.is_file() else {}
    if state in ACTIVE:
        extra = {**extra, "driver": _this_process()}
    write_json(run.state, {**current, **extra, "state": state})


def get_state(run: RunDir) -> dict:
    """The run's record; an active one whose driver is gone from this host reads 'interrupted'."""
    state = read_json(run.state) if run.state.is_file() else {}
    if state.get("state") in ACTIVE and _gone(state.get("driver")):
        state = {**state, "state": "interrupted", "interrupted_by": "driver process gone"}
    return state


def _this_process() -> dict:
    me = psutil.Process()
    return {"host": socket.gethostname(), "pid": me.pid, "created": me.create_time()}


def _gone(driver: dict | None) -> bool:
    """True only when sure: the driver ran on this host and its process (pid + start time) is not alive.
    A driver on another host cannot be checked from here and counts as alive."""
    if not driver or driver.get("host") != socket.gethostname():
        return False
    try:
        proc = psutil.Process(driver["pid"])
        reused = abs(proc.create_time() - driver["created"]) > 0.01
        return reused or proc.status() == psutil.STATUS_ZOMBIE  # a zombie has exited, not yet reaped
    except psutil.NoSuchProcess:
        return True
