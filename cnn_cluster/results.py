"""A run folder: every path in it, its Parquet schemas, atomic reads/writes, one read of it all.

Nothing else in the package builds a path inside a run folder or touches Parquet: ``RunDir``
names every file, and the helpers below write and read them. Every write goes to a temporary
name in the same folder and is renamed into place, so a reader never sees a partial file.

Where each file is written (W) and read (R):

=================================  =========================================  ==============================
path (``RunDir`` member)           W                                          R
=================================  =========================================  ==============================
config.yaml (config)               submit.submit (the resolved config)        read_run, run_folder.prepare, CLI
run.json (state)                   set_state (submit, occlusion_stage, CLI)   get_state (read_run, CLI, ...)
trials.parquet (trials)            submit.submit (sweep.collect's rows)       read_run, occlusion_stage
epochs.parquet (epochs)            submit.submit                              read_run
predictions.parquet (predictions)  submit.submit (from test_arrays)           read_run
occlusion.parquet (occlusion)      occlusion_stage.occlude                    read_run
occlusion.parts/ (occlusion_part)  occlusion_jobs (a map per file, as done)   occlusion_jobs on resume
report/ (report)                   report.build_report                        the user
tune/ (tune)                       Ray Tune (experiment state, searcher)      Tune on resume
tune-scheduler/ (asha_state)       search.GroupedASHA                         search.GroupedASHA on resume
train/train-<id>/ (train_run)      Ray Train (latest checkpoint)              Ray Train on a trial's restart
live/<trial>.json (live)           train.train_loop's rank 0, per batch       progress.Progress
checkpoints/<t>.pt (checkpoint)    sweep._keep_best                           models.load_trained
checkpoints/<t>.test_*.npy         sweep (write_test_arrays)                  trial_predictions (submit)
checkpoints/<t>.epochs.json        sweep._keep_best (write_json)              read_history
checkpoints/<t>.final.json         sweep._keep_best (last: marks it finished) sweep._trial on resume
checkpoints/<t>.placement_group    train.train_loop's rank 0                  sweep.release_placement_group
<output root>/latest (latest)      run_folder.link_latest                     the user (``make demo``)
=================================  =========================================  ==============================
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

import psutil
import pyarrow as pa
import pyarrow.parquet as pq

from .config import SweepConfig, TrainConfig, load_config
from .errors import CnncError

def _train_columns() -> list[tuple[str, pa.DataType]]:
    """One column per ``TrainConfig`` field, typed from its annotation (a new field gets its column
    without an edit here)."""
    kinds = {int: pa.int64(), float: pa.float64(), bool: pa.bool_(), tuple[float, float]: pa.list_(pa.float64())}
    return [(name, kinds.get(f.annotation, pa.string())) for name, f in TrainConfig.model_fields.items()]


TRIALS_SCHEMA = pa.schema([
    ("trial", pa.string()),  # experiment name; in a search <experiment>-<sample>
    ("trial_id", pa.string()),
    ("status", pa.string()),  # finished | stopped (by ASHA, in a search) | failed
    ("error", pa.string()),
    ("conv_filters", pa.list_(pa.int32())),
    ("conv_layers", pa.int32()),
    ("fc_layers", pa.list_(pa.int32())),
    ("max_pool", pa.bool_()),
    ("stride", pa.int32()),
    ("kernel_size", pa.int32()),
    # every train field, generated from TrainConfig so none is left out; precision holds what the
    # trial computed in (train.precision resolved): fp32 | bf16
    *_train_columns(),
    ("params", pa.int64()),
    ("flops", pa.int64()),
    ("best_epoch", pa.int32()),
    ("val_acc", pa.float64()),
    ("test_acc", pa.float64()),
    ("train_seconds", pa.float64()),
    ("images_per_s", pa.float64()),
    ("workers", pa.int32()),
    ("node", pa.string()),  # host name of the trial's rank-0 worker
    ("node_id", pa.string()),  # its Ray node id: tells apart several nodes on one host
    ("rank_nodes", pa.list_(pa.string())),  # host name of every rank, in rank order (DDP may span nodes)
    ("rank_node_ids", pa.list_(pa.string())),  # their Ray node ids
    ("experiment", pa.string()),  # the experiment the trial belongs to (a search has several per experiment)
    ("sample", pa.int32()),  # a search's recipe number within its experiment; 0 without a search
    ("searched", pa.string()),  # a search's drawn values as JSON, keyed like search.space
    ("epochs_run", pa.int32()),  # epochs trained (fewer than epochs where ASHA stopped the trial)
])

def trial_status(error: Any, last: dict) -> str:
    """A trial's ``status``: finished (its final report came), stopped (ASHA ended it after an
    epoch), else failed; from Tune's error and the trial's last reported metrics."""
    if error is None and last.get("final") == 1:
        return "finished"
    if error is None and not last.get("train_failed") and "val_acc" in last:
        return "stopped"
    return "failed"


EPOCHS_SCHEMA = pa.schema([
    ("trial", pa.string()),
    ("epoch", pa.int32()),
    ("train_loss", pa.float64()),
    ("train_acc", pa.float64()),
    ("val_loss", pa.float64()),
    ("val_acc", pa.float64()),
    ("seconds", pa.float64()),
    ("images_per_s", pa.float64()),
])

OCCLUSION_SCHEMA = pa.schema([
    ("trial", pa.string()),
    ("index", pa.int64()),  # row of the packed dataset
    ("true", pa.int32()),
    ("pred", pa.int32()),
    ("target", pa.int32()),  # the class whose probability the map holds
    ("target_kind", pa.string()),  # true | predicted
    ("correct", pa.bool_()),
    ("clean_prob", pa.float32()),
    ("window", pa.int32()),
    ("stride", pa.int32()),
    ("fill", pa.string()),
    ("map_h", pa.int32()),
    ("map_w", pa.int32()),
    ("map", pa.list_(pa.float32())),  # row-major, map_h x map_w
    ("min_prob", pa.float32()),
    ("min_y", pa.int32()),  # top-left pixel of the window with the lowest probability
    ("min_x", pa.int32()),
    ("box", pa.list_(pa.int32())),  # x0, y0, x1, y1 of the object, when known
    ("object_share", pa.float32()),  # share of the confidence drop on windows centred in the box
    ("box_share", pa.float32()),  # share of window centres in the box
    ("pointing", pa.bool_()),  # the largest drop lies inside the box
    ("node", pa.string()),  # host:pid of the actor that drew the map
    ("node_id", pa.string()),  # its Ray node id
])

PREDICTIONS_SCHEMA = pa.schema([
    ("index", pa.int64()),  # row of the packed dataset
    ("true", pa.int32()),
    ("pred", pa.int32()),
    ("p_true", pa.float32()),
    ("p_pred", pa.float32()),
    ("top5", pa.list_(pa.int32())),
])


@dataclass(frozen=True)
class RunDir:
    """Paths inside one run folder."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def state(self) -> Path:
        return self.root / "run.json"

    @property
    def trials(self) -> Path:
        return self.root / "trials.parquet"

    @property
    def epochs(self) -> Path:
        return self.root / "epochs.parquet"

    @property
    def predictions(self) -> Path:
        return self.root / "predictions.parquet"

    @property
    def occlusion(self) -> Path:
        return self.root / "occlusion.parquet"

    @property
    def report(self) -> Path:
        return self.root / "report"

    @property
    def tune(self) -> Path:
        return self.root / "tune"

    @property
    def train_storage(self) -> Path:
        return self.root / "train"

    @property
    def scheduler_state(self) -> Path:
        """A search's ASHA rungs (search.GroupedASHA): Tune does not save its scheduler."""
        return self.root / "tune-scheduler"

    def asha_state(self, experiment: str) -> Path:
        return self.scheduler_state / f"{experiment}.pkl"

    @property
    def occlusion_parts(self) -> Path:
        """Finished occlusion maps, one file each, kept until occlusion.parquet is written."""
        return self.root / "occlusion.parts"

    def occlusion_part(self, trial: str, index: int, target: int, window: int, stride: int, fill: str) -> Path:
        """One finished map: the same only for the same trial, image, target class and settings."""
        return self.occlusion_parts / f"{trial}-{index}-{target}-{window}-{stride}-{fill}.npz"

    @property
    def latest(self) -> Path:
        """``<output root>/latest``: a link to the newest run beside this one."""
        return self.root.parent / "latest"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    def train_run(self, trial_id: str) -> Path:
        """Ray Train's storage of one trial's run (its latest checkpoint), named after the Tune trial id."""
        return self.train_storage / f"train-{trial_id}"

    @property
    def live_dir(self) -> Path:
        return self.root / "live"

    def live(self, trial: str) -> Path:
        """A running trial's place inside its epoch (written by its rank 0, read by the progress lines)."""
        return self.live_dir / f"{trial}.json"

    def placement_group(self, trial: str) -> Path:
        """The id of the placement group a trial's workers run in (written by its rank 0)."""
        return self.checkpoints / f"{trial}.placement_group"

    def checkpoint(self, trial: str) -> Path:
        """A finished trial's best-validation weights and its recipe."""
        return self.checkpoints / f"{trial}.pt"

    def test_arrays(self, trial: str) -> tuple[Path, Path]:
        """A tested trial's test-split rows and softmax probabilities (.npy), as its workers gathered them."""
        return self.checkpoints / f"{trial}.test_index.npy", self.checkpoints / f"{trial}.test_probs.npy"

    def final(self, trial: str) -> Path:
        """A finished trial's last metrics (test accuracy): their presence marks it finished."""
        return self.checkpoints / f"{trial}.final.json"

    def history(self, trial: str) -> Path:
        """A finished trial's epochs, from its final checkpoint (each epoch once)."""
        return self.checkpoints / f"{trial}.epochs.json"


# --------------------------------------------------------------------------- atomic writes


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it into place on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        _discard(tmp)
        raise CnncError(f"{path}: cannot write ({exc.strerror or exc}); earlier results are intact") from None
    except BaseException:
        _discard(tmp)
        raise


def _discard(tmp: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(tmp)


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def write_table(path: Path, rows: list[dict], schema: pa.Schema) -> None:
    table = pa.Table.from_pylist(rows, schema=schema)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_table(path: Path) -> list[dict]:
    if not Path(path).is_file():
        return []
    return pq.read_table(path).to_pylist()


def save_figure(fig: Any, path: Path, dpi: int = 110) -> None:
    """Save a matplotlib figure atomically."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format=Path(path).suffix.lstrip(".") or "png")


def write_test_arrays(run: RunDir, trial: str, index: Any, probs: Any) -> None:
    """A tested trial's test rows and probabilities, beside its checkpoint."""
    import numpy as np

    for path, arr in zip(run.test_arrays(trial), (index, np.asarray(probs, np.float32))):
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.save(f, arr)


def trial_predictions(run: RunDir, trial: str, labels: Any) -> list[dict]:
    """A trial's test predictions (PREDICTIONS_SCHEMA rows), from its test arrays."""
    import numpy as np

    files = run.test_arrays(trial)
    if not all(f.is_file() for f in files):
        raise CnncError(f"{run.root}: no test predictions for trial '{trial}' (did it finish?)")
    idx, probs = (np.load(f) for f in files)
    top5 = np.argsort(-probs, axis=1)[:, :5]
    return [{"index": int(i), "true": int(labels[i]), "pred": int(t[0]), "p_true": float(p[labels[i]]),
             "p_pred": float(p[t[0]]), "top5": [int(v) for v in t]}
            for i, p, t in zip(idx, probs, top5)]


EPOCH_COLUMNS = [f.name for f in EPOCHS_SCHEMA][1:]  # what a trial's history holds per epoch


def read_history(run: RunDir, trial: str) -> list[dict]:
    """A finished trial's epochs (EPOCHS_SCHEMA rows), as its final checkpoint recorded them."""
    path = run.history(trial)
    if not path.is_file():
        return []
    return [{"trial": trial, **{c: (int(m[c]) if c == "epoch" else float(m[c])) for c in EPOCH_COLUMNS}}
            for m in json.loads(path.read_text())]


def drop_weights(run: RunDir) -> None:
    """Remove every trial's saved weights (``output.keep_checkpoints: false``); the tables stay."""
    for path in run.checkpoints.glob("*.pt"):
        path.unlink(missing_ok=True)


# --------------------------------------------------------------------------- one read of a run


@dataclass(frozen=True)
class RunData:
    """Everything a report shows, read once: the report, the page and the figures take this."""

    run: RunDir
    state: dict
    config: Optional[SweepConfig]  # None where config.yaml no longer validates
    trials: list[dict]
    epochs: list[dict]
    predictions: list[dict]
    occlusion: list[dict]

    @property
    def best(self) -> Optional[str]:
        return self.state.get("best")

    @property
    def name(self) -> str:
        return self.run.root.name


def read_run(run: RunDir) -> RunData:
    """Read a run folder's state, config and tables (missing tables read empty)."""
    try:
        config: Optional[SweepConfig] = load_config(run.config)
    except CnncError:
        config = None
    return RunData(run, get_state(run), config, read_table(run.trials), read_table(run.epochs),
                   read_table(run.predictions), read_table(run.occlusion))


# --------------------------------------------------------------------------- run state


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


def open_run(path: Path | str) -> RunDir:
    """A run folder given by the user, checked to be one."""
    run = RunDir(Path(path))
    if not run.root.is_dir():
        raise CnncError(f"{run.root}: no such run folder")
    if not run.config.is_file():
        raise CnncError(f"{run.root}: not a cnnc run folder (no config.yaml)")
    return run
