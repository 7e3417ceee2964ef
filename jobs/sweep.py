"""Entry point that runs a sweep on an already running Ray cluster (Ray Jobs, a SLURM allocation).

    RAY_ADDRESS=<gcs host:port or auto> python jobs/sweep.py CONFIG [--set FIELD=VALUE ...] [--run-dir DIR]
    RAY_ADDRESS=... python jobs/sweep.py --resume RUN_DIR

The same work as ``cnnc submit``, attached to the cluster instead of starting an
embedded one (``cnnc submit --address http://HOST:8265`` submits this file as a
Ray Job). Exit code 2 with one line on a bad config, like the CLI.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
import tempfile
from pathlib import Path

import cnn_cluster

from cnn_cluster import logs
from cnn_cluster.errors import CnncError
from cnn_cluster.run.folder import interruptible, prepare
from cnn_cluster.sweep.submit import submit
from cnn_cluster.tracking.send import finish as finish_tracking


def _leave_working_dir() -> None:
    """Import the whole package, then leave the job's working_dir.

    Ray deletes a job's working_dir once the worker processes that shared it exit,
    while this driver still runs in it (seen with Ray 2.60: the sweep's last step
    failed in os.getcwd()); code imported later would be gone too.
    """
    for mod in pkgutil.walk_packages(cnn_cluster.__path__, "cnn_cluster."):
        importlib.import_module(mod.name)
    os.chdir(tempfile.gettempdir())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", nargs="?")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE")
    parser.add_argument("--run-dir", type=Path, help="the run folder (default: <output root>/<name>-<timestamp>)")
    parser.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue an interrupted run folder")
    parser.add_argument("--trust-shared-run", action="store_true",
                        help="with --resume: resume a run folder others can write to (it is unpickled)")
    parser.add_argument("--quiet", "-q", action="store_true", help="only warnings, errors and results")
    parser.add_argument("--verbose", "-v", action="store_true", help="also the details behind each step")
    args = parser.parse_args(argv)
    logs.configure(logs.QUIET if args.quiet else logs.VERBOSE if args.verbose else logs.NORMAL)
    if args.config:
        args.config = str(Path(args.config).resolve())
    if os.environ.get("RAY_JOB_ID") or os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR"):
        _leave_working_dir()
    address = os.environ.get("RAY_ADDRESS", "auto")
    try:
        cfg, run = prepare(args.config, args.overrides, args.resume, args.run_dir, args.trust_shared_run)
        with interruptible(run):  # `cnnc stop` / `ray job stop` send SIGTERM
            outcome = submit(cfg, run=run, resume=bool(args.resume), address=address)
    except CnncError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted; continue with: python jobs/sweep.py --resume {run.root}", flush=True)
        return 130
    print(f"results: {outcome.run.root}  ({outcome.counts()})", flush=True)
    finish_tracking(outcome.run, cfg.tracking)
    return 0 if outcome.best else 1


if __name__ == "__main__":
    sys.exit(main())
