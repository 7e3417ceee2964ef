"""Entry point that runs a sweep on an already running Ray cluster (Ray Jobs, a SLURM allocation).

    RAY_ADDRESS=<gcs host:port or auto> python jobs/sweep.py CONFIG [--set FIELD=VALUE ...]

The same work as ``cnnc submit``, attached to the cluster instead of starting an
embedded one. Exit code 2 with one line on a bad config, like the CLI.
"""

from __future__ import annotations

import argparse
import os
import sys

from cnn_cluster.config import load_config
from cnn_cluster.errors import CnncError
from cnn_cluster.submit import submit


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
        outcome = submit(cfg, address=os.environ.get("RAY_ADDRESS", "auto"))
    except CnncError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"results: {outcome.run.root}  ({outcome.finished} finished, {outcome.failed} failed)")
    return 0 if outcome.best else 1


if __name__ == "__main__":
    sys.exit(main())
