"""Part B as Ray work spread over the cluster, around analyse.py.

Each worker is an actor that loads the model once (its weights come from the object store) and
analyses the images it is handed, every method at once; results are put back in the order the
images were chosen, whichever worker finished first.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from typing import Optional, Protocol

import numpy as np
import ray
import torch

from .. import logs
from ..cluster import node_id
from ..config import OcclusionConfig
from ..data import PackedDataset
from ..errors import CnncError
from ..training.step import norm_stats, to_input
from .analyse import ImageResult, Settings, analyse
from .check import check_methods, check_window
from .occlusion import resolve_method, select_images
from .verdict import row_scores

log = logs.get("attribution")


class Parts(Protocol):
    """Where one image's finished rows are kept until occlusion.parquet is written (stage.py)."""

    def load(self, index: int, target: int) -> Optional[list[dict]]: ...

    def save(self, index: int, target: int, rows: list[dict]) -> None: ...


@ray.remote
class Occluder:
    """One worker: a model in eval mode, a fixed number of threads (or a GPU)."""

    def __init__(self, model: torch.nn.Module, mean: tuple, std: tuple, threads: int):
        torch.set_num_threads(threads)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = model.to(self.device).eval()
        self.mean, self.std = mean, std

    def run(self, key: int, image: np.ndarray, target: int, settings: Settings, sanity: bool) -> tuple:
        batch = torch.from_numpy(np.ascontiguousarray(image)).to(self.device)
        x = to_input(batch, *norm_stats(self.mean, self.std, self.device))
        res = analyse(self.model, x, target, settings, sanity, seed=settings.seed + key)
        where = (socket.gethostname() + f":{os.getpid()}", node_id())
        return key, res, where


def settings_of(cfg: OcclusionConfig, model: torch.nn.Module, data: PackedDataset) -> Settings:
    return Settings(methods=tuple(cfg.methods), window=cfg.window, stride=cfg.stride, fill=cfg.fill,
                    path=resolve_method(model, cfg.method), precision=cfg.precision,
                    grad_cam_layer=cfg.grad_cam_layer, ig_steps=cfg.ig_steps, steps=cfg.faithfulness_steps,
                    mean=tuple(data.mean), std=tuple(data.std), seed=cfg.seed)


def digest(s: Settings, sanity_images: int) -> str:
    """What makes a kept image's rows the same rows: every setting that changes a number."""
    text = json.dumps([list(s.methods), s.window, s.stride, s.fill, s.path, s.precision, s.grad_cam_layer,
                       s.ig_steps, s.steps, s.seed, sanity_images])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def plan_work(preds: list[dict], cfg: OcclusionConfig) -> list[tuple[int, int, int, str]]:
    """(dataset index, true, target, kind) per map, in the order the images were chosen."""
    chosen = select_images(preds, cfg.count, cfg.select, cfg.seed, cfg.misclassified)
    if not chosen:
        raise CnncError("occlusion: the model classified no test image correctly; nothing to map")
    return [(p["index"], p["true"], t, kind) for p, targets in chosen for t, kind in targets]


def run_occlusion(model: torch.nn.Module, data: PackedDataset, preds: list[dict], cfg: OcclusionConfig,
                  trial: str, workers: Optional[int] = None, parts: Optional[Parts] = None) -> list[dict]:
    """Analyse every chosen image on Ray workers; one row per (image, target class, method).

    With ``parts``, each image's rows are kept as they arrive, and images found there from an
    interrupted run of the same settings are not computed again.
    """
    check_window(cfg, data.image_size)
    check_methods(cfg, model)
    work = plan_work(preds, cfg)
    settings = settings_of(cfg, model, data)
    sanity = _sanity_keys(work, cfg.sanity_images)
    done: dict[int, list[dict]] = {}
    for i, w in enumerate(work):
        kept = parts.load(w[0], w[2]) if parts else None
        if kept is not None:
            done[i] = kept
    todo = [i for i in range(len(work)) if i not in done]
    if done:
        log.info(f"occlusion: {len(done)} of {len(work)} maps kept from the interrupted run")
    pool = _start_pool(model, data, workers or cfg.workers or _default_workers(len(todo)), bool(todo))
    pending = [pool[j % len(pool)].run.remote(i, data.images[[work[i][0]]], work[i][2], settings, i in sanity)
               for j, i in enumerate(todo)]
    t0 = time.time()
    log.info(f"occlusion: {len(todo)} maps on {len(pool)} worker(s) (an image and class each: "
             f"{', '.join(cfg.methods)}); window "
             f"{cfg.window}, stride {cfg.stride}, fill {cfg.fill}, {settings.path} path"
             + (f"; randomisation check on {len(sanity)} image(s)" if sanity else ""))
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        key, res, where = ray.get(ready[0])
        done[key] = _rows(trial, work[key], res, where, data, preds, cfg)
        if parts:
            parts.save(work[key][0], work[key][2], done[key])
        log.info(f"[{time.time() - t0:5.1f}s] occlusion {len(done)}/{len(work)}: image {work[key][0]} "
                 f"{data.class_names[work[key][2]]} ({work[key][3]} class) on {where[0]} (node {where[1]})")
    for a in pool:
        ray.kill(a)
    return [r for i in range(len(work)) for r in done[i]]


def _sanity_keys(work: list[tuple], count: int) -> set[int]:
    """The first ``count`` images mapped for their true class get the randomisation check."""
    return set([i for i, w in enumerate(work) if w[3] == "true"][:count])


def _start_pool(model: torch.nn.Module, data: PackedDataset, n: int, needed: bool) -> list:
    if not needed:
        return []
    gpu = ray.cluster_resources().get("GPU", 0) >= 1
    actor = Occluder.options(num_cpus=0 if gpu else 1, num_gpus=1 if gpu else 0, scheduling_strategy="SPREAD")
    model_ref = ray.put(model.cpu())  # once; every actor reads the same weights
    return [actor.remote(model_ref, data.mean, data.std, 1) for _ in range(n)]


def _default_workers(maps: int) -> int:
    cpus = int(ray.cluster_resources().get("CPU", 1))
    return max(1, min(maps, cpus, 8))


def _rows(trial: str, w: tuple, res: ImageResult, where: tuple[str, str], data: PackedDataset,
          preds: list[dict], cfg: OcclusionConfig) -> list[dict]:
    index, true, target, kind = w
    pred = next(p["pred"] for p in preds if p["index"] == index)
    box = [int(v) for v in data.boxes[index]]
    base = {"trial": trial, "index": index, "true": true, "pred": pred, "target": target, "target_kind": kind,
            "correct": pred == true, "clean_prob": res.clean, "window": cfg.window, "stride": cfg.stride,
            "fill": cfg.fill, "node": where[0], "node_id": where[1]}
    for name, curve in (("random", res.curves.get("random")), ("centre", res.curves.get("centre"))):
        base[f"{name}_deletion"] = curve.deletion.tolist() if curve else None
        base[f"{name}_insertion"] = curve.insertion.tolist() if curve else None
    return [_method_row(base, m, res, box) for m in cfg.methods]


def _method_row(base: dict, method: str, res: ImageResult, box: list[int]) -> dict:
    pmap = res.shown[method]
    row = {**base, "method": method, "map_h": pmap.shape[0], "map_w": pmap.shape[1],
           "map": pmap.astype(np.float32).ravel().tolist(), "min_prob": None, "min_y": None, "min_x": None}
    if method == "occlusion":  # the study's reading: where the window hurt most
        iy, ix = np.unravel_index(int(np.argmin(pmap)), pmap.shape)
        row.update(min_prob=float(pmap.min()), min_y=int(iy) * base["stride"], min_x=int(ix) * base["stride"])
    curve = res.curves.get(method)
    row.update(deletion=curve.deletion.tolist() if curve else None,
               insertion=curve.insertion.tolist() if curve else None,
               deletion_auc=curve.deletion_auc if curve else None,
               insertion_auc=curve.insertion_auc if curve else None)
    checked = res.sanity.get(method)
    row.update(sanity_layers=[layer for layer, _ in checked] if checked else None,
               sanity_rho=[rho for _, rho in checked] if checked else None)
    row.update(row_scores(row, box))
    return row
