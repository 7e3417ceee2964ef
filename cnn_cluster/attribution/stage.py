"""Part B of a run: the best (or a named) trial's maps into occlusion.parquet, and the
object-or-context verdict from boxes drawn afterwards.

Runs after a sweep (``cnnc submit``) or on its own (``cnnc occlude``); the Ray fan-out is
actors.py, the math analyse.py and the modules it names.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Optional

from ..config import OcclusionConfig
from ..data import PackedDataset
from ..errors import CnncError
from ..run.io import read_table, trial_predictions, write_table
from ..run.paths import RunDir
from ..run.schemas import OCCLUSION_SCHEMA
from ..run.read import open_run_dataset
from ..run.state import get_state, set_state


class _Parts:
    """One Parquet file per finished image under RUN/occlusion.parts, named by trial, image,
    target and a digest of the settings."""

    def __init__(self, run: RunDir, trial: str, settings: str):
        self.run, self.trial, self.settings = run, trial, settings

    def _path(self, index: int, target: int) -> Path:
        return self.run.occlusion_part(self.trial, index, target, self.settings)

    def load(self, index: int, target: int) -> Optional[list[dict]]:
        path = self._path(index, target)
        return read_table(path) if path.is_file() else None

    def save(self, index: int, target: int, rows: list[dict]) -> None:
        write_table(self._path(index, target), rows, OCCLUSION_SCHEMA)


def occlude(run: RunDir, occ: OcclusionConfig, trial: Optional[str] = None, data: Optional[PackedDataset] = None,
            predictions: Optional[list[dict]] = None) -> list[dict]:
    """Map the chosen test images of ``trial`` (default: the best) and write occlusion.parquet.

    ``predictions``: the trial's test predictions where the caller holds them already.
    """
    from ..cluster import ensure_ray
    from ..models import load_trained
    from .actors import digest, run_occlusion, settings_of
    from .check import check_methods, check_window

    state = get_state(run)
    data = data or open_run_dataset(run, state)
    check_window(occ, data.image_size)
    known = [t["trial"] for t in read_table(run.trials) if t["status"] == "finished"]
    trial = trial or state.get("best")
    if trial not in known:
        raise CnncError(f"--trial {trial}: no finished trial of that name in {run.root}; "
                        f"finished: {', '.join(known) or 'none'}")
    model, _ = load_trained(run.checkpoint(trial), data.num_classes, data.image_size)
    check_methods(occ, model)
    ensure_ray()
    t0 = time.time()
    preds = predictions if predictions is not None else trial_predictions(run, trial, data.labels)
    parts = _Parts(run, trial, digest(settings_of(occ, model, data), occ.sanity_images))
    rows = run_occlusion(model, data, preds, occ, trial, parts=parts)
    write_table(run.occlusion, rows, OCCLUSION_SCHEMA)
    shutil.rmtree(run.occlusion_parts, ignore_errors=True)
    # The sweep's tables exist (the trial was found in them), so with the maps the run is complete,
    # also when this finishes an occlusion stage whose driver was killed.
    set_state(run, "finished", occlusion_seconds=time.time() - t0, occlusion=occ.model_dump())
    return rows


def apply_drawn_boxes(run: RunDir, boxes: Path) -> list[dict]:
    """Score the maps already in occlusion.parquet against the boxes of ``boxes`` (the report's
    CSV, or any file in the data.boxes format); every row of the file must name an analysed image.
    Rewrites occlusion.parquet in place (atomically); the maps are not computed again."""
    from ..data.boxes import apply_boxes, read_boxes
    from .verdict import row_scores

    if not run.occlusion.is_file():
        raise CnncError(f"--boxes: {run.root} has no occlusion.parquet yet; run `cnnc occlude {run.root}` first")
    rows = read_table(run.occlusion)
    data = open_run_dataset(run, get_state(run), boxes=False)
    analysed = {data.sources[r["index"]] for r in rows}
    names = {k for s in analysed for k in (s, Path(s).name, Path(s).stem)}
    stray = [k for k in read_boxes(boxes) if k not in names]
    if stray:
        raise CnncError(f"--boxes {boxes}: {len(stray)} row(s) name images that were not analysed "
                        f"(first: {stray[0]!r}); the report page lists the analysed ones")
    data = apply_boxes(data, boxes)
    for r in rows:
        r.update(row_scores(r, [int(v) for v in data.boxes[r["index"]]]))
    write_table(run.occlusion, rows, OCCLUSION_SCHEMA)
    return rows
