"""The occlusion stage as Ray work spread over the cluster, around occlusion.py.

Each worker is an actor that loads the model once (its weights come from the
object store) and maps the images it is handed; results are put back in the
order the images were chosen, whichever worker finished first.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import ray
import torch

from .. import logs
from ..cluster import node_id
from ..config import OcclusionConfig
from ..data import PackedDataset
from ..errors import CnncError
from ..training.step import norm_stats, to_input
from .occlusion import box_scores, grid_size, occlusion_map, resolve_method, select_images

log = logs.get("attribution")


@ray.remote
class Occluder:
    """One worker: a model in eval mode, a fixed number of threads (or a GPU)."""

    def __init__(self, model: torch.nn.Module, mean: tuple, std: tuple, threads: int):
        torch.set_num_threads(threads)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = model.to(self.device).eval()
        self.mean, self.std = mean, std

    def run(self, key: int, images: np.ndarray, targets: list[int], opts: dict) -> tuple:
        batch = torch.from_numpy(np.ascontiguousarray(images)).to(self.device)
        x = to_input(batch, *norm_stats(self.mean, self.std, self.device))
        res = occlusion_map(self.model, x, targets, mean=self.mean, std=self.std, **opts)
        where = (socket.gethostname() + f":{os.getpid()}", node_id())
        return key, res.maps.numpy(), res.clean.numpy(), where


def check_window(cfg: OcclusionConfig, image_size: int) -> None:
    """Refuse a window or stride that does not fit the images, naming the fields."""
    try:
        grid_size(image_size, cfg.window, cfg.stride)
    except ValueError as exc:
        raise CnncError(f"occlusion.window/stride: {exc}") from None


def plan_work(preds: list[dict], cfg: OcclusionConfig) -> list[tuple[int, int, int, str]]:
    """(dataset index, true, target, kind) per map, in the order the images were chosen."""
    chosen = select_images(preds, cfg.count, cfg.select, cfg.seed, cfg.misclassified)
    if not chosen:
        raise CnncError("occlusion: the model classified no test image correctly; nothing to map")
    return [(p["index"], p["true"], t, kind) for p, targets in chosen for t, kind in targets]


def run_occlusion(model: torch.nn.Module, data: PackedDataset, preds: list[dict], cfg: OcclusionConfig,
                  trial: str, workers: Optional[int] = None,
                  parts: Optional[Callable[..., Path]] = None) -> list[dict]:
    """Map every chosen image on Ray workers; one row per (image, target class).

    With ``parts`` (``RunDir.occlusion_part``: where one map is kept), each finished map is kept
    as it arrives, and maps found there from an interrupted run of the same settings are not
    computed again.
    """
    check_window(cfg, data.image_size)
    work = plan_work(preds, cfg)
    method = resolve_method(model, cfg.method)  # resolved here too: the progress line names the path
    opts = {"window": cfg.window, "stride": cfg.stride, "fill": cfg.fill, "method": method,
            "precision": cfg.precision}
    results = _load_parts(parts, trial, work, cfg) if parts else {}
    todo = [i for i in range(len(work)) if i not in results]
    if results:
        log.info(f"occlusion: {len(results)} of {len(work)} maps kept from the interrupted run")
    pool = _start_pool(model, data, workers or cfg.workers or _default_workers(len(todo)), bool(todo))
    pending = [pool[j % len(pool)].run.remote(i, data.images[[work[i][0]]], [work[i][2]], opts)
               for j, i in enumerate(todo)]
    t0 = time.time()
    log.info(f"occlusion: {len(todo)} maps on {len(pool)} worker(s), window {cfg.window}, stride {cfg.stride}, "
        f"fill {cfg.fill}, {method} path")
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        key, maps, clean, where = ray.get(done[0])
        results[key] = (maps[0], float(clean[0]), where)
        if parts:
            _save_part(parts, trial, work[key], cfg, results[key])
        log.info(f"[{time.time() - t0:5.1f}s] occlusion {len(results)}/{len(work)}: image {work[key][0]} "
            f"{data.class_names[work[key][2]]} ({work[key][3]} class) on {where[0]} (node {where[1]})")
    for a in pool:
        ray.kill(a)
    return [_row(trial, work[i], *results[i], data, preds, cfg) for i in range(len(work))]


def _start_pool(model: torch.nn.Module, data: PackedDataset, n: int, needed: bool) -> list:
    if not needed:
        return []
    gpu = ray.cluster_resources().get("GPU", 0) >= 1
    actor = Occluder.options(num_cpus=0 if gpu else 1, num_gpus=1 if gpu else 0, scheduling_strategy="SPREAD")
    model_ref = ray.put(model.cpu())  # once; every actor reads the same weights
    return [actor.remote(model_ref, data.mean, data.std, 1) for _ in range(n)]


def _part(parts: Callable[..., Path], trial: str, w: tuple, cfg: OcclusionConfig) -> Path:
    """A map is the same map only for the same trial, image, target and settings."""
    return parts(trial, w[0], w[2], cfg.window, cfg.stride, cfg.fill)


def _save_part(parts: Callable[..., Path], trial: str, w: tuple, cfg: OcclusionConfig, result: tuple) -> None:
    from ..run.io import atomic_path

    with atomic_path(_part(parts, trial, w, cfg)) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, map=result[0], clean=result[1], where=np.array(result[2]))


def _load_parts(parts: Callable[..., Path], trial: str, work: list, cfg: OcclusionConfig) -> dict:
    found = {}
    for i, w in enumerate(work):
        path = _part(parts, trial, w, cfg)
        if path.is_file():
            with np.load(path, allow_pickle=False) as z:
                found[i] = (z["map"], float(z["clean"]), tuple(str(s) for s in z["where"]))
    return found


def _default_workers(maps: int) -> int:
    cpus = int(ray.cluster_resources().get("CPU", 1))
    return max(1, min(maps, cpus, 8))


def _row(trial: str, w: tuple, pmap: np.ndarray, clean: float, where: tuple[str, str], data: PackedDataset,
         preds: list[dict], cfg: OcclusionConfig) -> dict:
    index, true, target, kind = w
    pred = next(p["pred"] for p in preds if p["index"] == index)
    iy, ix = np.unravel_index(int(np.argmin(pmap)), pmap.shape)
    box = [int(v) for v in data.boxes[index]]
    scores = box_scores(pmap, clean, box, cfg.window, cfg.stride) if min(box) >= 0 else {}
    return {
        "trial": trial, "index": index, "true": true, "pred": pred, "target": target, "target_kind": kind,
        "correct": pred == true, "clean_prob": clean, "window": cfg.window, "stride": cfg.stride,
        "fill": cfg.fill, "map_h": pmap.shape[0], "map_w": pmap.shape[1],
        "map": pmap.astype(np.float32).ravel().tolist(), "min_prob": float(pmap.min()),
        "min_y": int(iy) * cfg.stride, "min_x": int(ix) * cfg.stride,
        "box": box if scores else None, "object_share": scores.get("object_share"),
        "box_share": scores.get("box_share"), "pointing": scores.get("pointing"), "node": where[0],
        "node_id": where[1],
    }
