"""A SLURM job's starts and the one run folder they share (slurm/ray-cluster.sbatch).

A job that SLURM requeues (a time limit the script saw coming, a preemption, a lost node,
``scontrol requeue``) starts again under the same job id with ``SLURM_RESTART_COUNT`` > 0. Its
first start records the run folder it drives in the job folder (``CNNC_RUN_FILE``); every later
start resumes that folder instead of starting a second one, or ends at once where the run needs
nothing more (finished) or failed for its own reasons (no loop). No Ray in here: the batch script
calls it before Ray starts and after Ray is gone.

    cnnc slurm start RUN_FILE                # prints: fresh | resume RUN | exit CODE
    cnnc slurm settle RUN_FILE [--after PID]  # prints the run's state, or none
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Optional

import psutil

from .paths import RunDir
from .state import ACTIVE, get_state, set_state

RUN_FILE_ENV = "CNNC_RUN_FILE"


def record_run(run: RunDir) -> None:
    """Name the run folder in the job's run file, before the folder exists: a start killed in
    between leaves a name with no folder, which the next start reads as nothing to resume."""
    path = os.environ.get(RUN_FILE_ENV)
    if path:
        tmp = Path(f"{path}.tmp")
        tmp.write_text(f"{run.root.resolve()}\n")
        tmp.replace(path)


def this_start() -> Optional[dict]:
    """The SLURM job and its start number (1 for the first), or None outside a SLURM job."""
    job = os.environ.get("SLURM_JOB_ID")
    if not job or not os.environ.get(RUN_FILE_ENV):
        return None
    restarts = int(os.environ.get("SLURM_RESTART_COUNT") or 0)
    return {"job": job, "start": restarts + 1, "host": socket.gethostname(), "at": time.time()}


def recorded_run(run_file: Path) -> Optional[RunDir]:
    """The run folder an earlier start recorded, where it holds a run; else None."""
    if not run_file.is_file():
        return None
    run = RunDir(Path(run_file.read_text().strip()))
    return run if run.config.is_file() else None


def settle(run: RunDir) -> str:
    """The run's state, recording ``interrupted`` where its driver died without saying so.

    Called on the driver's host once the driver is gone: SLURM signals Ray's processes with the
    driver, and Ray going down can take the driver before its handler records the interruption.
    """
    state = get_state(run)
    if state.get("interrupted_by"):
        set_state(run, "interrupted")
    return state.get("state", "none")


def start_action(run_file: Path) -> tuple[str, str]:
    """What a requeued start does: (``fresh`` | ``resume RUN`` | ``exit CODE``, why)."""
    run = recorded_run(run_file)
    if run is None:
        return "fresh", "no run folder recorded by an earlier start: starting the sweep anew"
    state = get_state(run).get("state", "none")
    if state == "finished":
        return "exit 0", f"run {run.root} is finished: nothing to resume"
    if state == "failed":
        return "exit 1", f"run {run.root} failed for its own reasons (see its trials.parquet): not resumed"
    was = "" if state not in ACTIVE else f" (recorded as {state}: its driver went down with the last start)"
    return f"resume {run.root}", f"resuming run {run.root}{was}"


def wait_gone(pid: int, timeout: float = 60) -> None:
    """Until process ``pid`` has exited (a zombie counts as exited), or ``timeout`` seconds."""
    try:
        proc = psutil.Process(pid)
        end = time.time() + timeout
        while time.time() < end and proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
            time.sleep(0.2)
    except psutil.NoSuchProcess:
        pass
