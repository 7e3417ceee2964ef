"""The occlusion stage of a run (Part B): the best (or a named) trial's maps into occlusion.parquet.

Runs after a sweep (``cnnc submit``) or on its own (``cnnc occlude``); the Ray fan-out is
actors.py, the math occlusion.py.
"""

from __future__ import annotations

import shutil
import time
from typing import Optional

from ..config import OcclusionConfig
from ..data import PackedDataset
from ..errors import CnncError
from ..run.io import read_table, trial_predictions, write_table
from ..run.paths import RunDir
from ..run.schemas import OCCLUSION_SCHEMA
from ..run.read import open_run_dataset
from ..run.state import get_state, set_state


def occlude(run: RunDir, occ: OcclusionConfig, trial: Optional[str] = None, data: Optional[PackedDataset] = None,
            predictions: Optional[list[dict]] = None) -> list[dict]:
    """Map the chosen test images of ``trial`` (default: the best) and write occlusion.parquet.

    ``predictions``: the trial's test predictions where the caller holds them already.
    """
    from ..cluster import ensure_ray
    from ..models import load_trained
    from .actors import check_window, run_occlusion

    state = get_state(run)
    data = data or open_run_dataset(run, state)
    check_window(occ, data.image_size)
    known = [t["trial"] for t in read_table(run.trials) if t["status"] == "finished"]
    trial = trial or state.get("best")
    if trial not in known:
        raise CnncError(f"--trial {trial}: no finished trial of that name in {run.root}; "
                        f"finished: {', '.join(known) or 'none'}")
    ensure_ray()
    model, _ = load_trained(run.checkpoint(trial), data.num_classes, data.image_size)
    t0 = time.time()
    preds = predictions if predictions is not None else trial_predictions(run, trial, data.labels)
    rows = run_occlusion(model, data, preds, occ, trial, parts=run.occlusion_part)
    write_table(run.occlusion, rows, OCCLUSION_SCHEMA)
    shutil.rmtree(run.occlusion_parts, ignore_errors=True)
    # The sweep's tables exist (the trial was found in them), so with the maps the run is complete,
    # also when this finishes an occlusion stage whose driver was killed.
    set_state(run, "finished", occlusion_seconds=time.time() - t0, occlusion=occ.model_dump())
    return rows
