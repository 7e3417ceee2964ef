"""One Tune trial: the driver that fits a TorchTrainer for one experiment and keeps its best weights.

The Ray 2.60 pattern: a Tune *function* trainable is each trial's driver; it builds and fits a
``TorchTrainer`` whose run is named after the trial id, so a restarted trial resumes from its own
checkpoints. Drivers take almost no CPU, so on a 2-CPU machine the workers of the running trials
always fit.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ray import tune

from ..run.io import atomic_path, write_json, write_test_arrays
from ..run.paths import RunDir
from ..run.reports import FailedReport, parse
from ..training.worker import CHECKPOINT_FILE, TEST_FILES, WorkerArgs, train_loop
from .plan import TrialResources


def run_trial(config: dict, data: list, run: RunDir, resources: TrialResources) -> None:
    """One Tune trial: fit a TorchTrainer for one experiment, keep its best weights.

    Tune starts it again where its driver process died (``max_failures``); the TorchTrainer's run,
    named after the trial id, then resumes from its last checkpoint.
    """
    from ray import tune
    from ray.train import CheckpointConfig, FailureConfig, ScalingConfig, TrainingFailedError
    from ray.train.torch import TorchConfig

    from ..training.trainer import make_trainer

    exp = config["experiment"]
    done = run.final(exp["name"])
    if done.is_file():  # finished before the driver was killed: report it, train nothing
        tune.report(parse(json.loads(done.read_text())).as_restored().to_metrics())
        return
    trial_id = tune.get_context().get_trial_id()
    trainer = make_trainer(
        train_loop,
        train_loop_config=WorkerArgs(experiment=exp, data=data, threads=resources.threads,
                                     test=config.get("test", True),
                                     placement_group_file=str(run.placement_group(exp["name"])),
                                     live_file=str(run.live(exp["name"]))).as_config(),
        torch_config=TorchConfig(backend="nccl" if resources.gpus > 0 else "gloo"),
        scaling_config=ScalingConfig(
            num_workers=resources.workers, use_gpu=resources.gpus > 0,
            resources_per_worker={"CPU": resources.cpus, **({"GPU": resources.gpus} if resources.gpus else {})},
        ),
        run=dict(
            name=run.train_run(trial_id).name,
            storage_path=str(run.train_storage),
            failure_config=FailureConfig(max_failures=resources.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=1),  # the latest holds the best weights too
        ),
        lean=resources.lean, pg_cleaner=resources.dashboard,
    )
    try:
        result = trainer.fit()
    except TrainingFailedError as exc:  # workers failed too often: a failed trial, not a lost driver
        tune.report(FailedReport(one_line(exc)).to_metrics())
        return
    _keep_best(result.checkpoint.path, run, exp, result.metrics)
    # Its outputs are in checkpoints/ now: Train's storage (model, optimizer, best weights) goes.
    shutil.rmtree(run.train_run(trial_id), ignore_errors=True)


def _keep_best(ckpt_dir: str, run: RunDir, exp: dict, final: dict) -> None:
    """Copy the best-validation weights, the recipe, test predictions and epochs into checkpoints/.

    The final metrics go last: their file marks the trial finished for a resumed sweep.
    """
    name = exp["name"]
    state = torch.load(Path(ckpt_dir) / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
    with atomic_path(run.checkpoint(name)) as tmp:
        torch.save({"model": state["best_model"], "experiment": exp, "best_epoch": state["best_epoch"]}, tmp)
    tested = [Path(ckpt_dir) / f for f in TEST_FILES]
    if all(f.is_file() for f in tested):  # a search trial has none
        write_test_arrays(run, name, *(np.load(f) for f in tested))
    write_json(run.history(name), state["history"])
    write_json(run.final(name), final)


class ReleaseLostPlacementGroups(tune.Callback):
    """A trial driver killed outright (SIGKILL, its node lost) takes its workers with it, but the
    placement group it reserved for them is scoped to the sweep's job and stays: later trials would
    wait for its CPUs in 60 s start-up timeouts. Ray Train's cleaner needs a dashboard; this does
    not. Tune calls it before it starts the trial again (or gives up on it)."""

    def __init__(self, run: RunDir):
        self.run = run

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        release_placement_group(self.run.placement_group(trial.config["experiment"]["name"]))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        release_placement_group(self.run.placement_group(trial.config["experiment"]["name"]))


def release_placement_group(path: Path) -> bool:
    """Remove the placement group whose id a trial's rank 0 wrote to ``path``, if it still exists."""
    import ray
    from ray.util.placement_group import PlacementGroup, placement_group_table, remove_placement_group

    try:
        pg = PlacementGroup(ray.PlacementGroupID(bytes.fromhex(path.read_text().strip())))
    except (OSError, ValueError):
        return False
    if placement_group_table(pg).get("state", "REMOVED") == "REMOVED":
        return False
    remove_placement_group(pg)
    return True


def one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    last = [line for line in text if line.strip()][-1] if text else repr(error)
    return f"{type(error).__name__}: {last}"[:500]
