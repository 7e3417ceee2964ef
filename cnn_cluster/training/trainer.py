"""Which TorchTrainer a Tune trial driver fits, and how its reports reach Tune.

Ray Train 2.60 starts, for every ``fit()``, a controller actor (a fresh Python process that
imports Ray Train), a queue actor that carries the controller's reports to Tune, a
placement-group cleaner actor and a DatasetManager actor, before the training workers
themselves. On a small machine those processes were most of a trial's fixed cost
(docs/performance.md). The lean trainer (``ray_compat.lean_trainer_class``) keeps Ray's
controller, worker group, backend and failure handling, and changes where they run:

- the controller runs in the trial driver itself, a Ray worker that Tune reuses from trial to
  trial and that has Ray Train imported already; its reports go straight to the Tune session
  of that same thread (``ReportToTune``), so no queue actor is needed either;
- no DatasetManager and no Ray Data autoscaling coordinator: the data reaches the workers
  through the object store, not Ray Data;
- the placement-group cleaner only where it can work: it asks the dashboard's state API
  whether the controller (here: the trial driver) still lives, and without a dashboard it
  never can.

It leans on Ray's private names; where they changed (or ``CNNC_RAY_STOCK=1``), trials use
Ray's stock ``TorchTrainer`` with ``TuneReportCallback`` instead: the same tables, a slower start.
"""

from __future__ import annotations

from typing import Any, Optional

from ray import tune
from ray.train import Checkpoint, UserCallback
from ray.tune.integration.ray_train import CHECKPOINT_PATH_KEY

from . import ray_compat


class ReportToTune(UserCallback):
    """Ray's TuneReportCallback for a controller that runs in the trial driver's own thread:
    rank 0's metrics (and the checkpoint's path) go straight to ``tune.report``."""

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]],
                     checkpoint: Optional[Checkpoint]) -> None:
        result = dict(metrics[0])
        if checkpoint:
            result[CHECKPOINT_PATH_KEY] = checkpoint.path
        tune.report(result)


def make_trainer(loop: Any, *, run: dict, lean: bool, pg_cleaner: bool, **kwargs: Any) -> Any:
    """The lean trainer (``lean``: the sweep found Ray's internals as expected), else Ray's stock one.

    ``run`` holds the RunConfig's arguments (without callbacks); the rest are TorchTrainer's.
    """
    from ray.train import RunConfig

    if lean:
        return ray_compat.lean_trainer_class()(loop, run_config=RunConfig(**run, callbacks=[ReportToTune()]),
                                               pg_cleaner=pg_cleaner, **kwargs)
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    return TorchTrainer(loop, run_config=RunConfig(**run, callbacks=[TuneReportCallback()]), **kwargs)
