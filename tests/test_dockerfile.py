"""The Dockerfile stays consistent with the project: what it copies exists, what it runs is ours."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = (REPO / "Dockerfile").read_text()


def _instructions(name: str) -> list[list[str]]:
    joined = re.sub(r"\\\n", " ", DOCKERFILE)
    return [line.split()[1:] for line in joined.splitlines() if line.split()[:1] == [name]]


def test_every_copied_path_exists():
    copies = _instructions("COPY") + _instructions("ADD")
    assert copies
    for args in copies:
        sources = [a for a in args[:-1] if not a.startswith("--")]
        for src in sources:
            assert (REPO / src).exists(), f"Dockerfile copies {src}, which is not in the repository"


def test_matches_pyproject():
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    version = re.search(r"^FROM python:(\d+)\.(\d+)", DOCKERFILE, re.M)
    assert version, "a slim Python base image"
    low = re.search(r">=(\d+)\.(\d+)", meta["requires-python"])
    assert tuple(map(int, version.groups())) >= tuple(map(int, low.groups()))
    assert "slim" in DOCKERFILE.splitlines()[[i for i, ln in enumerate(DOCKERFILE.splitlines())
                                               if ln.startswith("FROM")][0]]
    entry = re.search(r'^ENTRYPOINT \["(\w+)"\]', DOCKERFILE, re.M).group(1)
    assert entry in meta["scripts"]
    assert re.search(r"^USER (?!root)\w+", DOCKERFILE, re.M), "runs as a non-root user"
    # the Jobs entry point that cnnc submit --address ships must be in the image
    assert any(args[0].rstrip("/") == "jobs" for args in _instructions("COPY"))
