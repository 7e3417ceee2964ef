"""Imported by every Python worker process of the embedded cluster (Ray's ``preload_python_modules``).

When the first driver connects, Ray starts one worker per CPU before any job needs one, and
keeps them idle in its pool; an actor without a runtime env takes one of those instead of a
fresh process. In those prestarted workers (no job yet) this module imports what a trial driver
needs, torch above all, while the driver is still setting the sweep up; the first trial of a
sweep then starts on a warm process instead of paying ~3 s of imports (docs/performance.md).
Workers started for an actor or task (a job of their own) import nothing here: they may never
need torch (Ray Train's synchronisation actor does not).
"""

from __future__ import annotations

import os
import sys
import time


def prestarted() -> bool:
    """A worker Ray started before any job: its job id is the nil id (all ``f``)."""
    job = os.environ.get("RAY_JOB_ID", "")
    return bool(job) and not job.strip("f")


def _import_trial_driver_modules() -> None:
    t0 = time.perf_counter()
    try:
        import ray.train.torch  # noqa: F401  (torch, and the TorchTrainer a trial driver builds)
        import ray.train.v2._internal.execution.checkpoint.sync_actor  # noqa: F401
        import ray.tune.trainable.function_trainable  # noqa: F401

        from . import sweep, trainer  # noqa: F401
    except Exception as exc:  # a warm-up must never keep a worker from starting: it imports on use
        print(f"cnnc prewarm: skipped ({type(exc).__name__}: {exc})", file=sys.stderr, flush=True)
        return
    # Into this worker's own log (worker-<id>-ffffffff-<pid>.err in the session's logs).
    print(f"cnnc prewarm: imported torch, Ray Train and cnn_cluster in {time.perf_counter() - t0:.1f} s",
          file=sys.stderr, flush=True)


if prestarted():
    _import_trial_driver_modules()
