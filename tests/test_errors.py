"""Every row of docs/errors.md: one line naming the problem, exit code 2, nothing written, no traceback."""

from __future__ import annotations

import os
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from cnn_cluster.cli import app

from conftest import tiny_config

REPO = Path(__file__).resolve().parent.parent
CATALOGUE = (REPO / "docs" / "errors.md").read_text()
runner = CliRunner()


def _rows() -> list[tuple[str, str]]:
    """(id, test column) of every catalogue row."""
    rows = []
    for line in CATALOGUE.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and re.fullmatch(r"[a-z-]+", cells[0]) and cells[0] != "id":
            rows.append((cells[0], cells[4]))
    return rows


@pytest.fixture(scope="module")
def finished_run(ray_local, tmp_path_factory) -> Path:
    """A tiny finished run with one trial, 'a'."""
    tmp = tmp_path_factory.mktemp("finished")
    cfg = tmp / "sweep.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config(tmp, experiments=[{"name": "a", "conv_filters": [4], "fc_layers": []}])))
    result = runner.invoke(app, ["submit", str(cfg), "--no-dashboard", "--no-report"])
    assert result.exit_code == 0, result.output
    return (tmp / "runs" / "latest").resolve()


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


MARKER = Path("/tmp/cnnc-evil-checkpoint-ran")


def _case(case: str, tmp: Path, run: Path | None) -> tuple[list[str], str]:
    """The command line of one catalogue row and the text its error must contain."""
    cfg = tmp / "sweep.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config(tmp)))
    submit = ["submit", str(cfg), "--no-dashboard", "--no-report"]
    if case == "yaml-syntax":
        cfg.write_text("name: x\ntrain:\n  epochs: [1, 2\n")
        return submit, "line"
    if case == "unknown-key":
        return [*submit, "--set", "train.epoch=3"], "did you mean 'epochs'"
    if case == "wrong-type":
        return [*submit, "--set", "train.epochs=many"], "train.epochs"
    if case == "bad-choice":
        return [*submit, "--set", "train.optimizer=adamw"], "train.optimizer: must be one of adam or sgd"
    if case == "empty-experiments":
        return [*submit, "--set", "experiments=[]"], "experiments"
    if case == "impossible-architecture":
        return [*submit, "--set", "experiments.0.conv_filters=[4,4,4,4,4,4,4,4]"], "conv layer"
    if case == "batch-too-large":
        return [*submit, "--set", "train.batch_size=100000"], "larger than the training split"
    if case == "window-too-large":
        return [*submit, "--set", "occlusion={window: 100, stride: 2}"], "occlusion.window"
    if case == "missing-data-root":
        return [*submit, "--set", "data.source=miniimagenet", "--set", f"data.root={tmp / 'nope'}"], "nope"
    if case == "unreadable-data-root":
        return [*submit, "--set", "data.source=miniimagenet", "--set", f"data.root={_unreadable(tmp)}"], "locked"
    if case == "missing-config":
        return ["submit", str(tmp / "nope.yaml")], "nope.yaml"
    if case == "output-holds-run":
        return [*submit, "--set", f"output.root={run}"], "holds another run"
    if case == "resume-not-a-run":
        return ["submit", "--resume", str(tmp)], "not a cnnc run folder"
    if case == "resources-unsatisfiable":
        return [*submit, "--set", "resources.cpus_per_worker=64"], "resources.cpus_per_worker"
    if case == "checkpoint-architecture":
        copy = _copy_run(run, tmp)
        other = torch.load(copy / "checkpoints" / "a.pt", weights_only=True)
        other["experiment"]["model"]["conv_filters"] = [8]  # the weights stay those of conv [4]
        torch.save(other, copy / "checkpoints" / "a.pt")
        return ["occlude", str(copy), "--no-report"], "do not match the architecture"
    if case == "malicious-checkpoint":
        copy = _copy_run(run, tmp)
        (copy / "checkpoints" / "a.pt").write_bytes(pickle.dumps(_Evil()))
        return ["occlude", str(copy), "--no-report"], "unsafe to load"
    if case == "unknown-trial":
        return ["occlude", str(run), "--trial", "zzz", "--no-report"], "no finished trial of that name"
    if case == "unknown-run":
        return ["report", str(tmp / "nope")], "no such run folder"
    if case == "unreachable-address":
        return [*submit, "--address", "127.0.0.1:9"], "no Ray cluster answers there"
    raise KeyError(case)


def _copy_run(run: Path, tmp: Path) -> Path:
    copy = tmp / "copy"
    shutil.copytree(run, copy, symlinks=True)
    return copy


def _unreadable(tmp: Path) -> Path:
    locked = tmp / "locked"
    (locked / "n01532829").mkdir(parents=True)
    locked.chmod(0)
    return locked


IN_THIS_FILE = [row for row, test in _rows() if test.startswith("`test_catalogue[")]
NEEDS_RUN = {"output-holds-run", "checkpoint-architecture", "malicious-checkpoint", "unknown-trial"}


@pytest.mark.parametrize("case", IN_THIS_FILE)
def test_catalogue(case, tmp_path, request):
    if case == "unreadable-data-root" and os.geteuid() == 0:
        _run_without_dac(case, tmp_path)
        return
    run = request.getfixturevalue("finished_run") if case in NEEDS_RUN else None
    if case == "resources-unsatisfiable":
        request.getfixturevalue("ray_local")  # the cluster that cannot satisfy it
    argv, needle = _case(case, tmp_path, run)
    before = _files(tmp_path) | (_files(run) if run else set())
    MARKER.unlink(missing_ok=True)
    result = runner.invoke(app, argv)
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and needle in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert not MARKER.exists()  # no checkpoint code ran
    after = _files(tmp_path) | (_files(run) if run else set())
    assert after == before, f"written: {after - before}"


def _run_without_dac(case: str, tmp: Path) -> None:
    """Root reads everything: run the CLI without the capabilities that let it."""
    if not shutil.which("setpriv"):
        pytest.skip("needs util-linux's setpriv to make a folder unreadable to root")
    argv, needle = _case(case, tmp, None)
    r = subprocess.run(["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-all",
                        sys.executable, "-m", "cnn_cluster.cli", *argv], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.startswith("error: ") and needle in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp / "runs").exists()


def _files(root: Path) -> set[str]:
    return {str(p) for p in root.rglob("*")} if root else set()


def test_every_catalogue_row_has_a_test():
    rows = _rows()
    assert len(rows) >= 20
    sources = {p.name: p.read_text() for p in (REPO / "tests").glob("test_*.py")}
    for row, test in rows:
        for ref in re.findall(r"`([^`]+)`", test):
            if ref.startswith("test_catalogue["):
                assert row in IN_THIS_FILE
                continue
            file, _, name = ref.rpartition("::")
            text = sources[Path(file).name] if file else sources["test_errors.py"]
            assert f"def {name.split('[')[0]}(" in text, f"{row}: {ref} does not exist"


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MB tmpfs (root only); unmounted afterwards."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=True)


def test_disk_full_keeps_earlier_results(finished_run, small_disk):
    copy = small_disk / "run"
    shutil.copytree(finished_run, copy, symlinks=True, ignore=shutil.ignore_patterns("report", "train", "tune"))
    before = {p.name: p.read_bytes() for p in copy.glob("*.parquet")}
    st = os.statvfs(small_disk)  # fill the disk up to its last 8 KB
    (small_disk / "filler").write_bytes(b"\0" * (st.f_bavail * st.f_frsize - 8192))
    result = runner.invoke(app, ["report", str(copy)])
    assert result.exit_code == 2, result.output
    line = result.output.strip()
    assert line.startswith("error: ") and "No space left on device" in line and "earlier results are intact" in line
    assert len(line.splitlines()) == 1 and "Traceback" not in line
    assert {p.name: p.read_bytes() for p in copy.glob("*.parquet")} == before  # earlier results intact
    assert not [p for p in copy.rglob("*.tmp")], "a temporary file was left behind"
