"""Debian packages the suite installs for itself on a fresh machine (root with apt-get), once.

A new machine may have stale or no apt lists: every install refreshes them first.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Optional

_UPDATED: list[bool] = []


def missing_reason(packages: list[str]) -> Optional[str]:
    """Why ``packages`` cannot be installed here, or None."""
    if os.geteuid() != 0:
        return f"{', '.join(packages)}: not installed, and installing needs root"
    if not shutil.which("apt-get"):
        return f"{', '.join(packages)}: not installed, and there is no apt-get to install them"
    return None


def install(packages: list[str]) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if not _UPDATED:
        subprocess.run(["apt-get", "update", "-qq", "-o", "Acquire::Retries=3"], check=True, env=env,
                       capture_output=True)
        _UPDATED.append(True)
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages], check=True, env=env,
                   capture_output=True)
