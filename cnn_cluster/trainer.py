"""Ray's TorchTrainer, trimmed for a sweep of short trials run from a Tune trial driver.

Ray Train 2.60 starts, for every ``fit()``, a controller actor (a fresh Python process that
imports Ray Train), a queue actor that carries the controller's reports to Tune, a
placement-group cleaner actor and a DatasetManager actor, before the training workers
themselves. On a small machine those processes were most of a trial's fixed cost
(docs/performance.md). ``LeanTorchTrainer`` keeps Ray's controller, worker group, backend
and failure handling, and changes where they run:

- the controller runs in the trial driver itself, a Ray worker that Tune reuses from trial to
  trial and that has Ray Train imported already; its reports go straight to the Tune session
  of that same thread, so no queue actor is needed either;
- no DatasetManager: the data reaches the workers through the object store, not Ray Data;
- no Ray Data autoscaling coordinator: Ray Train registers each run's workers with that actor
  so that Ray Data's autoscaler leaves their resources alone; with no Ray Data in a trial
  nothing reads them, yet the actor's process (~2.5 CPU-seconds to start) competed with the
  first trial's start on a small machine;
- the placement-group cleaner only where it can work: it asks the dashboard's state API
  whether the controller (here: the trial driver) still lives, and without a dashboard it
  never can.
"""

from __future__ import annotations

import asyncio
from typing import Any, Optional

from ray import tune
from ray.train import Checkpoint
from ray.train.torch import TorchTrainer
from ray.train.v2._internal.callbacks.datasets import DatasetsCallback
from ray.train.v2._internal.callbacks.placement_group_callback import PlacementGroupCleanerCallback
from ray.train.v2._internal.execution.controller.controller import TrainController
from ray.train.v2._internal.execution.scaling_policy.fixed import FixedScalingPolicy
from ray.train.v2.api.callback import UserCallback
from ray.tune.integration.ray_train import CHECKPOINT_PATH_KEY


class LeanTorchTrainer(TorchTrainer):
    """A TorchTrainer whose ``fit()`` runs its controller in the calling process (a Tune trial
    driver). ``pg_cleaner=False`` drops the placement-group cleaner (a cluster without a dashboard)."""

    def __init__(self, *args: Any, pg_cleaner: bool = True, **kwargs: Any):
        self._pg_cleaner = pg_cleaner
        super().__init__(*args, **kwargs)

    def _create_default_callbacks(self) -> list:
        drop: tuple[type, ...] = () if self.datasets else (DatasetsCallback,)
        if not self._pg_cleaner:
            drop += (PlacementGroupCleanerCallback,)
        return [c for c in super()._create_default_callbacks() if not isinstance(c, drop)]

    def _initialize_and_run_controller(self, **controller_init_kwargs: Any):
        # Ray's version creates a TrainController actor here; the same object, in this thread.
        # Its SIGINT handler is not needed: Tune runs this outside the main thread, where Ray
        # does not register it either.
        policy = controller_init_kwargs["scaling_policy"]
        if type(policy) is FixedScalingPolicy and not self.datasets:  # elastic runs need the coordinator
            controller_init_kwargs["scaling_policy"] = FixedWithoutDataCoordinator(policy.scaling_config)
        controller = TrainController(**controller_init_kwargs)
        asyncio.run(controller.run())
        return controller.get_result()


class ReportToTune(UserCallback):
    """Ray's TuneReportCallback for a controller that runs in the trial driver's own thread:
    rank 0's metrics (and the checkpoint's path) go straight to ``tune.report``."""

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]],
                     checkpoint: Optional[Checkpoint]) -> None:
        result = dict(metrics[0])
        if checkpoint:
            result[CHECKPOINT_PATH_KEY] = checkpoint.path
        tune.report(result)


class FixedWithoutDataCoordinator(FixedScalingPolicy):
    """Ray's fixed-size policy, minus the resource requests to Ray Data's autoscaling coordinator
    (they only tell Ray Data's autoscaler what Train holds; the placement group itself is what
    reserves the workers' resources, and what an autoscaling cluster scales up for)."""

    def _maybe_send_resource_request(self) -> None:
        pass

    def _send_resource_request(self) -> None:
        pass

    def _cancel_resource_request(self) -> None:
        pass
