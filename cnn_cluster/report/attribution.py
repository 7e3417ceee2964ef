"""Part B's comparison of attribution methods, from occlusion.parquet's rows: faithfulness
(deletion/insertion AUCs against the random and centre rankings), the randomisation check and the
object-or-context verdict per method. Every sentence is computed from the numbers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from .page import Block, Html, Image, Section, Table

LABELS = {"occlusion": "Occlusion", "grad_cam": "Grad-CAM", "integrated_gradients": "Integrated Gradients",
          "saliency": "Saliency"}
# A map whose rank correlation with the trained model's map stays at or above this once every layer
# is random "survives randomisation" (Adebayo et al. judge by eye; 0.5 is where their surviving
# methods sit and the ones that pass fall well below).
SURVIVES = 0.5


def label(method: str) -> str:
    return LABELS.get(method, method)


def methods_of(occ: list[dict]) -> list[str]:
    return list(dict.fromkeys(r["method"] for r in occ))


def _true_rows(occ: list[dict], method: str) -> list[dict]:
    return [r for r in occ if r["method"] == method and r["target_kind"] == "true"]


def _mean_sd(values: list[float]) -> str:
    v = np.asarray([x for x in values if x is not None], np.float64)
    return f"{v.mean():.3f} ± {v.std():.3f}" if len(v) else "-"


def faithfulness(occ: list[dict]) -> dict[str, dict]:
    """Per method (and the random and centre rankings): mean deletion and insertion AUCs, and on how
    many images the map beat each baseline on both curves."""
    from ..attribution.faithfulness import auc

    out: dict[str, dict] = {}
    for m in methods_of(occ):
        rows = [r for r in _true_rows(occ, m) if r.get("deletion")]
        if not rows:
            continue
        d, i = [r["deletion_auc"] for r in rows], [r["insertion_auc"] for r in rows]
        beats = {b: sum(r["deletion_auc"] < auc(r[f"{b}_deletion"]) and r["insertion_auc"] > auc(r[f"{b}_insertion"])
                        for r in rows) for b in ("random", "centre")}
        out[m] = {"deletion": d, "insertion": i, "images": len(rows), "beats": beats}
    if out:
        rows = [r for r in _true_rows(occ, next(iter(out))) if r.get("deletion")]
        for b in ("random", "centre"):
            out[b] = {"deletion": [auc(r[f"{b}_deletion"]) for r in rows],
                      "insertion": [auc(r[f"{b}_insertion"]) for r in rows], "images": len(rows), "beats": {}}
    return out


def auc_table(f: dict[str, dict]) -> Table:
    rows = []
    for m, v in f.items():
        name = {"random": "random ranking", "centre": "centre-first ranking"}.get(m, label(m))
        beats = v["beats"]
        rows.append([name, _mean_sd(v["deletion"]), _mean_sd(v["insertion"]),
                     f"{beats['random']}/{v['images']}" if beats else "", f"{beats['centre']}/{v['images']}" if beats else ""])
    return Table(["Map", "Deletion AUC (lower: faithful)", "Insertion AUC (higher: faithful)",
                  "Beats random (images)", "Beats centre (images)"], rows)


def sanity(occ: list[dict]) -> dict[str, tuple[list[str], np.ndarray]]:
    """Per method: the cascade's layers and the mean rank correlation after each."""
    out = {}
    for m in methods_of(occ):
        rows = [r for r in _true_rows(occ, m) if r.get("sanity_rho")]
        if rows:
            out[m] = (rows[0]["sanity_layers"], np.mean([r["sanity_rho"] for r in rows], axis=0))
    return out


def sanity_table(s: dict[str, tuple[list[str], np.ndarray]], images: int) -> Table:
    layers = next(iter(s.values()))[0]
    rows = [[label(m), *(f"{v:.2f}" for v in rho),
             "survives: does not explain this model" if rho[-1] >= SURVIVES else "changes: passes"]
            for m, (_, rho) in s.items()]
    return Table(["Method", *(f"+ {layer}" for layer in layers), f"Verdict ({images} image(s))"], rows)


def verdicts(occ: list[dict]) -> dict[str, dict]:
    """Per method: images with a box, on how many the map's peak lies on the object, and the share
    of attribution on the object against the box's share of the image."""
    out = {}
    for m in methods_of(occ):
        rows = [r for r in _true_rows(occ, m) if r["correct"] and r.get("pointing") is not None]
        if rows:
            shares = [r["object_share"] for r in rows if r["object_share"] == r["object_share"]]
            out[m] = {"images": len(rows), "peak": sum(r["pointing"] for r in rows),
                      # an image reads "object" where more of the map's attribution lies on the object than
                      # the object's share of the image: the energy pointing game, fair to large boxes
                      "object": sum(r["object_share"] > r["box_share"] for r in rows if r["object_share"] == r["object_share"]),
                      "share": float(np.mean(shares)) if shares else float("nan"),
                      "box_share": float(np.mean([r["box_share"] for r in rows]))}
    return out


def verdict_word(v: dict) -> str:
    """The method's verdict: the side most of its images lean to (an even split decides nothing)."""
    lean = 2 * v["object"] - v["images"]
    return "object" if lean > 0 else "context" if lean < 0 else "neither (an even split)"


def verdict_table(v: dict[str, dict]) -> Table:
    rows = [[label(m), f"{x['object']}/{x['images']}", f"{x['peak']}/{x['images']}", f"{100 * x['share']:.0f} %",
             f"{100 * x['box_share']:.0f} %", verdict_word(x)] for m, x in v.items()]
    return Table(["Method", "Images: more on the object than chance", "Peak on the object",
                  "Attribution on the object (mean)", "Object's share of the image (mean)", "Relies on"], rows)


def observations(f: dict[str, dict], s: dict, v: dict[str, dict]) -> list[str]:
    out = []
    scored = {m: float(np.mean(x["insertion"]) - np.mean(x["deletion"])) for m, x in f.items()
              if m not in ("random", "centre")}
    if scored:
        best = max(scored, key=scored.get)
        centre = float(np.mean(f["centre"]["insertion"]) - np.mean(f["centre"]["deletion"]))
        lead = f"{label(best)} is the most faithful map on this model" if len(scored) > 1 else \
            f"{label(best)}'s map is {'faithful' if scored[best] > centre else 'no more faithful than the prior'}"
        out.append(f"{lead} (insertion minus deletion AUC {scored[best]:.3f}, against {centre:.3f} for simply "
                   f"ranking the centre first" + ("" if scored[best] > centre else "; no map beats the centre prior")
                   + ").")
        losers = [label(m) for m, x in scored.items() if x <= centre]
        if losers and len(losers) < len(scored):
            out.append(f"{', '.join(losers)} do(es) not beat the centre-first ranking: no more informative here "
                       "than the prior that the object is in the middle.")
    flagged = [label(m) for m, (_, rho) in s.items() if rho[-1] >= SURVIVES]
    if s:
        out.append(f"{', '.join(flagged)} survive(s) the randomisation of every layer (rank correlation >= "
                   f"{SURVIVES}): such maps show the image, not the model." if flagged else
                   "Every method's maps change once the model's weights are randomised: they depend on the model.")
    if v:
        words = {m: verdict_word(x) for m, x in v.items()}
        if len(words) == 1:
            (m, x), = v.items()
            out.append(f"{label(m)}: the model relies on the {words[m]} ({x['object']} of {x['images']} images put "
                       "more of the map on the object than its share of the image).")
        elif len(set(words.values())) == 1:
            out.append(f"All {len(words)} methods agree: the model relies on the {next(iter(words.values()))}.")
        else:
            out.append("The methods disagree: " + "; ".join(f"{label(m)} says {w}" for m, w in words.items()) + ".")
    return out


def section(occ: list[dict], files: dict[str, Path], drawing: Optional[Html]) -> Section:
    """The comparison section; ``drawing``: the box-drawing block (real photographs without boxes)."""
    f, s, v = faithfulness(occ), sanity(occ), verdicts(occ)
    blocks: list[Block] = [f"Each analysed image under every method ({', '.join(label(m) for m in methods_of(occ))}); "
                           "each map has its own colour scale and bar (occlusion: the class probability with the "
                           "window there, reversed so that bright is where hiding the place hurt; the others: "
                           "attribution, bright is more evidence)."]
    if "methods" in files:
        blocks.append(Image(files["methods"], "attribution maps side by side"))
    if f:
        blocks += ["**Faithfulness**", "Deletion and insertion (Petsiuk et al. 2018): pixels ranked by the map are removed into the fill value "
                   "(deletion) or added onto a blurred image (insertion); the class probability after each step. "
                   "Means over the images; the random and centre-first rankings are the bars to clear.",
                   auc_table(f)]
        if "faithfulness" in files:
            blocks.append(Image(files["faithfulness"], "deletion and insertion curves"))
    if s:
        blocks += ["**Randomisation check**", "Cascading randomisation (Adebayo et al. 2018): the layers are re-initialised from the logits "
                   "down; each cell is the rank correlation of the map with the trained model's, after that layer "
                   "and all above it are random.", sanity_table(s, len([r for r in occ if r.get("sanity_rho")])
                                                             // max(1, len(s)))]
    if v:
        blocks += ["**Object or context**", "Per method, from the drawn or known boxes (the energy pointing game):",
                   verdict_table(v)]
    if drawing is not None:
        blocks.append(drawing)
    obs = observations(f, s, v)
    if obs:
        blocks.append(obs)
    return Section("Attribution methods compared", blocks)
