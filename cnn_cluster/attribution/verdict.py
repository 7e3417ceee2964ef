"""Object or context, from a map and the object's box: pure numpy, for every method.

Occlusion is scored on its window grid (occlusion.box_scores: where the confidence drops);
a per-pixel map by the energy pointing game: the share of its positive attribution inside the
box against the box's share of the image, and whether its largest value lies inside.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from .occlusion import box_scores


def pixel_box_scores(pixmap: np.ndarray, box: Sequence[int]) -> dict:
    """``object_share``: positive attribution inside the box over all of it; ``box_share``: the
    box's share of the pixels; ``pointing``: the largest attribution lies inside."""
    h, w = pixmap.shape
    x0, y0, x1, y1 = box
    inside = np.zeros((h, w), bool)
    inside[max(0, y0):min(h, y1), max(0, x0):min(w, x1)] = True
    energy = np.clip(pixmap, 0, None)
    total = float(energy.sum())
    iy, ix = np.unravel_index(int(np.argmax(pixmap)), pixmap.shape)
    return {"object_share": float(energy[inside].sum() / total) if total > 0 else float("nan"),
            "box_share": float(inside.mean()), "pointing": bool(inside[iy, ix])}


def row_scores(row: dict, box: Optional[Sequence[int]]) -> dict:
    """The box columns of one occlusion.parquet row (all None without a box)."""
    if box is None or min(box) < 0:
        return {"box": None, "object_share": None, "box_share": None, "pointing": None}
    pmap = np.asarray(row["map"], np.float32).reshape(row["map_h"], row["map_w"])
    if row.get("method", "occlusion") == "occlusion":
        scores = box_scores(pmap, row["clean_prob"], box, row["window"], row["stride"])
    else:
        scores = pixel_box_scores(pmap, box)
    return {"box": [int(v) for v in box], **scores}
