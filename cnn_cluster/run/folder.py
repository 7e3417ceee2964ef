"""A run folder's life before and around a sweep: its name, the checks that refuse one, the
``latest`` link, the signals that interrupt it, and the preparation the CLI and jobs/sweep.py share.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import stat
from datetime import datetime
from pathlib import Path
from typing import Iterator, Optional

from ..config import SweepConfig, load_config
from ..errors import CnncError
from .paths import RunDir, open_run
from .state import ACTIVE, get_state, set_state


def prepare(config: Optional[Path | str], overrides: list[str], resume: Optional[Path | str] = None,
            run_dir: Optional[Path | str] = None, trust_shared: bool = False) -> tuple[SweepConfig, RunDir]:
    """The config and the run folder of a submission: a resumed run's own, or a new one.

    Checked before anything starts (a bad config, a folder that holds another run, a resumed folder
    others can write: ``check_trusted``, skipped with ``trust_shared``); nothing is written.
    """
    if resume is not None:
        run = open_run(resume)
        if not trust_shared:
            check_trusted(run)
        return load_config(run.config, overrides), run
    if config is None:
        raise CnncError("give a CONFIG file (e.g. configs/demo.yaml) or --resume RUN_DIR")
    cfg = load_config(config, overrides)
    run = RunDir(Path(run_dir)) if run_dir is not None else new_run_dir(cfg)
    ensure_not_a_run(run.root)
    return cfg, run


# Where a resume unpickles: Tune's experiment state and trial checkpoints, Ray Train's run storage,
# the ASHA rungs, and the searcher's state (an Optuna study inside its JSON).
PICKLED = ("tune", "train", "tune-scheduler")


def check_trusted(run: RunDir) -> None:
    """Refuse to resume a run folder that someone other than this user could have written to, as ssh
    refuses a private key others can read: resuming unpickles files of the folder, and a pickle runs
    code as the user who loads it. Checked: the folder, every folder inside it, and every file of the
    parts a resume unpickles (``PICKLED``)."""
    me = os.getuid()
    for path in _pickle_bearing(run):
        st = path.lstat()
        if st.st_uid != me:
            raise CnncError(f"{path}: owned by {_user(st.st_uid)}, not by you ({_user(me)}); resuming unpickles "
                            f"this run folder, so it must be yours: chown -R {_user(me)} {run.root}, or resume "
                            "with --trust-shared-run if everyone who can write it is trusted")
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not stat.S_ISLNK(st.st_mode):
            raise CnncError(f"{path}: writable by group or others (mode {stat.S_IMODE(st.st_mode):o}); resuming "
                            f"unpickles this run folder: chmod -R go-w {run.root}, or resume with "
                            "--trust-shared-run if everyone who can write it is trusted")


def _pickle_bearing(run: RunDir) -> Iterator[Path]:
    """The run folder, every folder in it, and every file under ``PICKLED``, parents first."""
    yield run.root
    for top, dirs, files in os.walk(run.root):
        here = Path(top)
        for d in sorted(dirs):
            yield here / d
        if here != run.root and here.relative_to(run.root).parts[0] in PICKLED:
            for f in sorted(files):
                yield here / f


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def new_run_dir(cfg: SweepConfig) -> RunDir:
    """``<output root>/<name>-<timestamp>``, with a counter where that exists already."""
    root = Path(cfg.output.root).expanduser()
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path = root / f"{cfg.name}-{stamp}"
    n = 1
    while path.exists():
        n += 1
        path = root / f"{cfg.name}-{stamp}-{n}"
    return RunDir(path)


def ensure_not_a_run(path: Path) -> None:
    """Refuse to write into a folder that already holds another run, or to nest runs inside one."""
    path = Path(path)
    if RunDir(path).config.exists():
        raise CnncError(f"{path}: already holds a run; use --resume {path} or another output name")
    for parent in path.parents:
        if RunDir(parent).config.is_file() and RunDir(parent).state.is_file():
            raise CnncError(f"output.root: {parent} holds another run; runs go beside each other "
                            f"(use its parent folder), or continue it with --resume {parent}")


def link_latest(run: RunDir) -> None:
    """``<output root>/latest`` points at the newest run (what ``make demo`` reports on)."""
    link = run.latest
    tmp = link.with_name(f".latest.{run.root.name}")
    try:
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(run.root.name)
        tmp.replace(link)
    except OSError:  # a filesystem without symlinks: the printed path is enough
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def interruptible(run: RunDir) -> Iterator[None]:
    """SIGINT and SIGTERM (Ctrl-C, scancel, a SLURM time limit, ``cnnc stop``) interrupt the sweep.

    The state is recorded first: under scancel SLURM signals Ray's processes at the same time,
    and the orderly stop that follows can hang until this process is killed. SIGINT is taken
    even where a shell started us with it ignored (background jobs).
    """
    def interrupt(signum, frame) -> None:
        if get_state(run).get("state") in ACTIVE:
            set_state(run, "interrupted")
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
