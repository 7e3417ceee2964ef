"""Every row of docs/errors.md: one line naming the problem, exit code 2, nothing written, no traceback."""

from __future__ import annotations

import os
import pickle
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import pytest
import torch
import yaml
from typer.testing import CliRunner

from cnn_cluster.cli import app

from catalogue import documented
from tiny import tiny_config

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


@dataclass(frozen=True)
class Ctx:
    """Where one case runs: its folder, its tiny sweep file, the finished run (or None)."""

    tmp: Path
    cfg: Path
    run: Optional[Path]

    @property
    def submit(self) -> list[str]:
        return ["submit", str(self.cfg), "--no-dashboard", "--no-report"]

    def names(self) -> dict[str, str]:
        return {"tmp": str(self.tmp), "cfg": str(self.cfg), "run": str(self.run), "copy": str(self.tmp / "copy")}


# The names docs/errors.md shows where a message holds a path.
DOC_NAMES = {"tmp": "DIR", "cfg": "sweep.yaml", "run": "RUN", "copy": "RUN"}


def _yaml_syntax(c: Ctx) -> list[str]:
    c.cfg.write_text("name: x\ntrain:\n  epochs: [1, 2\n")
    return c.submit


def _unsafe_yaml(c: Ctx) -> list[str]:
    c.cfg.write_text("name: !!python/object/apply:os.system ['echo pwned']\n")
    return c.submit


def _search(space: str) -> Callable[[Ctx], list[str]]:
    """The tiny sweep with a search over ``space`` (one field: distribution)."""
    return lambda c: [*c.submit, "--set", f"search={{space: {{{space}}}}}"]


def _occlude_tampered(tamper: Callable[[Path], None]) -> Callable[[Ctx], list[str]]:
    """`cnnc occlude` on a copy of the finished run whose checkpoint ``tamper`` rewrote."""
    def argv(c: Ctx) -> list[str]:
        copy = _copy_run(c.run, c.tmp)
        tamper(copy / "checkpoints" / "a.pt")
        return ["occlude", str(copy), "--no-report"]
    return argv


def _other_architecture(ckpt: Path) -> None:
    other = torch.load(ckpt, weights_only=True)
    other["experiment"]["model"]["conv_filters"] = [8]  # the weights stay those of conv [4]
    torch.save(other, ckpt)


def _evil(ckpt: Path) -> None:
    ckpt.write_bytes(pickle.dumps(_Evil()))


# (catalogue id, the command line, the whole error line after "error: "), one row per mistake.
CASES: list[tuple[str, Callable[[Ctx], list[str]], str]] = [
    ("yaml-syntax", _yaml_syntax,
     "{cfg}: YAML syntax error at line 4, column 1: expected ',' or ']', but got '<stream end>'"),
    ("unknown-key", lambda c: [*c.submit, "--set", "train.epoch=3"],
     "{cfg}: train.epoch: unknown key; did you mean 'epochs'? valid keys: augmentation, batch_norm, batch_size, "
     "color_jitter, crop_scale, cutmix, dropout, ema, epochs, label_smoothing, lr, mixup, momentum, optimizer, "
     "precision, scheduler, seed, test_time_flip, warmup_epochs, weight_decay"),
    ("wrong-type", lambda c: [*c.submit, "--set", "train.epochs=many"],
     "{cfg}: train.epochs: Input should be a valid integer, unable to parse string as an integer (got 'many')"),
    ("bad-choice", lambda c: [*c.submit, "--set", "train.optimizer=adamw"],
     "{cfg}: train.optimizer: must be one of adam or sgd (got 'adamw')"),
    ("empty-experiments", lambda c: [*c.submit, "--set", "experiments=[]"],
     "{cfg}: experiments: the list is empty; add at least one experiment (or a grid)"),
    ("impossible-architecture", lambda c: [*c.submit, "--set", "experiments.0.conv_filters=[4,4,4,4,4,4,4,4]"],
     "experiments.0 (a): conv layer 7: max pooling a 1x1 map gives a feature map below 1x1; drop max_pool, "
     "use fewer conv layers or stride 1"),
    ("batch-too-large", lambda c: [*c.submit, "--set", "train.batch_size=100000"],
     "experiments.0 (a): train.batch_size 100000 is larger than the training split (80 images)"),
    ("window-too-large", lambda c: [*c.submit, "--set", "occlusion={window: 100, stride: 2}"],
     "occlusion.window/stride: occlusion window 100 is larger than the 84-pixel image"),
    ("missing-data-root", lambda c: [*c.submit, "--set", "data.source=miniimagenet", "--set",
                                     f"data.root={c.tmp / 'nope'}"],
     "data.root: {tmp}/nope does not exist"),
    ("unreadable-data-root", lambda c: [*c.submit, "--set", "data.source=miniimagenet", "--set",
                                        f"data.root={_unreadable(c.tmp)}"],
     "data.root: {tmp}/locked cannot be read (permission denied)"),
    ("missing-config", lambda c: ["submit", str(c.tmp / "nope.yaml")],
     "{tmp}/nope.yaml: no such config file"),
    ("output-holds-run", lambda c: [*c.submit, "--set", f"output.root={c.run}"],
     "output.root: {run} holds another run; runs go beside each other (use its parent folder), or continue it "
     "with --resume {run}"),
    ("resume-not-a-run", lambda c: ["submit", "--resume", str(c.tmp)],
     "{tmp}: not a cnnc run folder (no config.yaml)"),
    ("resources-unsatisfiable", lambda c: [*c.submit, "--set", "resources.cpus_per_worker=64"],
     "resources.cpus_per_worker: 64 CPUs per worker requested, but the largest node has 2"),
    ("checkpoint-architecture", _occlude_tampered(_other_architecture),
     "{copy}/checkpoints/a.pt: weights do not match the architecture of 'a' (Error(s) in loading state_dict for CNN:)"),
    ("malicious-checkpoint", _occlude_tampered(_evil),
     "{copy}/checkpoints/a.pt: not a cnnc checkpoint or unsafe to load (UnpicklingError)"),
    ("unknown-trial", lambda c: ["occlude", str(c.run), "--trial", "zzz", "--no-report"],
     "--trial zzz: no finished trial of that name in {run}; finished: a"),
    ("unknown-run", lambda c: ["report", str(c.tmp / "nope")],
     "{tmp}/nope: no such run folder"),
    ("unreachable-address", lambda c: [*c.submit, "--address", "127.0.0.1:9"],
     "--address 127.0.0.1:9: no Ray cluster answers there (Connection refused)"),
    ("unsafe-yaml", _unsafe_yaml,
     "{cfg}: YAML tag !!python/object/apply:os.system at line 1, column 7 is refused (only plain YAML is read)"),
    ("name-escapes-output", lambda c: [*c.submit, "--set", "name=../../etc"],
     "{cfg}: name: use letters, digits, '.', '_' and '-' only (it names the run folder) (got '../../etc')"),
    ("search-unknown-field", _search("train.lrate: {loguniform: [1.0e-4, 1.0e-2]}"),
     "{cfg}: search.space.train.lrate: unknown field; did you mean 'train.lr'? valid: train.epochs, "
     "train.batch_size, train.optimizer, train.lr, train.weight_decay, train.momentum, train.scheduler, "
     "train.warmup_epochs, train.augmentation, train.crop_scale, train.color_jitter, train.mixup, train.cutmix, "
     "train.ema, train.test_time_flip, train.batch_norm, train.dropout, train.label_smoothing, train.precision, "
     "train.seed, conv_filters, fc_layers, max_pool, stride, kernel_size"),
    ("search-empty-range", _search("train.lr: {loguniform: [1.0e-2, 1.0e-4]}"),
     "{cfg}: search.space.train.lr.loguniform: empty range: low 0.01 must be below high 0.0001"),
    ("search-wrong-distribution", _search("train.epochs: {uniform: [1, 3]}"),
     "{cfg}: search.space.train.epochs.uniform: this field takes integers; use randint, or quniform with whole "
     "numbers"),
    ("search-value-invalid", _search("train.dropout: {uniform: [0.0, 1.5]}"),
     "{cfg}: search.space.train.dropout.uniform: 1.5 is not a valid train.dropout for a (dropout: Input should be "
     "less than 1 (got 1.5))"),
]
TABLE = {case: (argv, message) for case, argv, message in CASES}


def _case(case: str, tmp: Path, run: Path | None) -> tuple[list[str], str]:
    """The command line of one catalogue row and the whole line it must print."""
    cfg = tmp / "sweep.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config(tmp)))
    ctx = Ctx(tmp, cfg, run)
    argv, message = TABLE[case]
    return argv(ctx), "error: " + message.format(**ctx.names())


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
    argv, line = _case(case, tmp_path, run)
    before = _files(tmp_path) | (_files(run) if run else set())
    MARKER.unlink(missing_ok=True)
    result = runner.invoke(app, argv)
    assert result.exit_code == 2, result.output
    assert result.output == line + "\n", result.output  # the whole line, nothing else, no traceback
    assert not MARKER.exists()  # no checkpoint code ran
    after = _files(tmp_path) | (_files(run) if run else set())
    assert after == before, f"written: {after - before}"


def test_the_catalogue_shows_each_message_in_full():
    """docs/errors.md's message column holds this table's lines, paths named as DOC_NAMES says."""
    shown = _messages()
    assert set(IN_THIS_FILE) == set(TABLE), "docs/errors.md and CASES list different rows"
    for case, (_, message) in TABLE.items():
        assert shown[case] == f"`{message.format(**DOC_NAMES)}`", f"{case}: docs/errors.md says {shown[case]}"


def _messages() -> dict[str, str]:
    """id -> the 'what cnnc says' cell of every catalogue row."""
    out = {}
    for line in CATALOGUE.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and re.fullmatch(r"[a-z-]+", cells[0]) and cells[0] != "id":
            out[cells[0]] = cells[3]
    return out


def _run_without_dac(case: str, tmp: Path) -> None:
    """Root reads everything: run the CLI without the capabilities that let it."""
    if not shutil.which("setpriv"):
        pytest.skip("needs util-linux's setpriv to make a folder unreadable to root")
    argv, line = _case(case, tmp, None)
    r = subprocess.run(["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-all",
                        sys.executable, "-m", "cnn_cluster.cli", *argv], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr == line + "\n", r.stderr
    assert not (tmp / "runs").exists()


def _files(root: Path) -> set[str]:
    return {str(p) for p in root.rglob("*")} if root else set()


def test_every_row_is_checked_word_for_word():
    """A row checked outside the catalogue cases names a test that compares with it (documented(ID))."""
    sources = {p.name: p.read_text() for p in (REPO / "tests").glob("test_*.py")}
    for row, test in _rows():
        if test.startswith("`test_catalogue["):
            continue
        for ref in re.findall(r"`([^`]+)`", test):
            file, _, name = ref.rpartition("::")
            text = sources[Path(file).name] if file else sources["test_errors.py"]
            body = text.split(f"def {name.split('[')[0]}(", 1)[1].split("\ndef ", 1)[0]
            assert re.search(rf"documented\(['\"]{row}['\"]", body), f"{row}: {ref} does not compare with the row"
        assert "..." not in _messages()[row], f"{row}: the message is not given in full"


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
    failed = line.removeprefix("error: ").split(": cannot write")[0]  # whichever write met the full disk
    assert failed.startswith(str(copy / "report")) and line == f"error: {documented('disk-full', FILE=failed)}"
    assert len(line.splitlines()) == 1 and "Traceback" not in line
    assert {p.name: p.read_bytes() for p in copy.glob("*.parquet")} == before  # earlier results intact
    assert not [p for p in copy.rglob("*.tmp")], "a temporary file was left behind"
