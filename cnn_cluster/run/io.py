"""Writes a reader in another process never sees half done (a temporary name, then a rename), and
the tables and side files of a run folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import CnncError
from .paths import RunDir
from .reports import parse


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


def read_history(run: RunDir, trial: str) -> list[dict]:
    """A finished trial's epochs (EPOCHS_SCHEMA rows), as its final checkpoint recorded them."""
    path = run.history(trial)
    if not path.is_file():
        return []
    return [parse(m).row(trial) for m in json.loads(path.read_text())]


def drop_weights(run: RunDir) -> None:
    """Remove every trial's saved weights (``output.keep_checkpoints: false``); the tables stay."""
    for path in run.checkpoints.glob("*.pt"):
        path.unlink(missing_ok=True)
