"""Every private Ray name cnnc uses, in one place, checked at import.

Ray's API policy keeps nothing under ``_internal`` / ``_private`` (or with a leading underscore)
stable between releases. cnnc uses such names only where a measured cost made it worth it
(docs/performance.md), and only here:

==========================================================================  ==========================================
private name                                                                why
==========================================================================  ==========================================
``ray.train.v2._internal.execution.controller.controller.TrainController``  run Ray Train's controller inside the Tune
  (``__init__(train_fn_ref, train_run_context, scaling_policy,              trial driver: no controller process, no
  failure_policy, callbacks, validation_config)``, ``async run()``,         queue actor per trial (~1.5-3 s per trial
  ``get_result()``)                                                         on 2 cores)
``TorchTrainer._initialize_and_run_controller(self, **kwargs)``             overridden to build that controller here
``TorchTrainer._create_default_callbacks(self)``                            overridden to drop the two callbacks below
``ray.train.v2._internal.callbacks.datasets.DatasetsCallback``              a DatasetManager actor per run; no trial
                                                                            uses Ray Data
``ray.train.v2._internal.callbacks.placement_group_callback.``              its cleaner asks the dashboard's state API
  ``PlacementGroupCleanerCallback``                                         and cannot work without a dashboard
``ray.train.v2._internal.execution.scaling_policy.fixed.FixedScalingPolicy``  minus its resource requests to Ray Data's
  (``scaling_config``, ``_maybe_send_resource_request``,                    autoscaling coordinator (an actor that
  ``_send_resource_request``, ``_cancel_resource_request``)                 cost ~2.5 CPU-s at the first trial)
``TrainController._worker_group`` and ``WorkerGroup.abort(self)``           when Tune stops a trial early (ASHA), end
                                                                            its workers and their placement group,
                                                                            which the trial driver (reused) would keep
``ray.init(_temp_dir=...)``                                                 a private temp folder per embedded cluster,
                                                                            removed at exit (Ray never cleans them)
``ray._private.state.actors()``                                             the actor classes a cluster ran, without a
                                                                            dashboard (tests only)
``RAY_TRAIN_*`` flags of ``ray/train/v2/_internal/constants.py``            see ``TRAIN_FLAGS``: actors and polling
                                                                            that a small machine pays for per trial
==========================================================================  ==========================================

``pyproject.toml`` caps Ray at the releases the suite has passed on. To lift the cap: install the
new Ray, run ``pytest tests/test_ray_compat.py`` (seconds: it fails naming each name that moved or
changed), then the whole suite; fix or drop what moved here, and raise the cap.

Where a check fails (or ``CNNC_RAY_STOCK=1`` asks for it), ``LEAN`` is False and every trial runs on
Ray's stock ``TorchTrainer`` with ``ray.tune.integration.ray_train.TuneReportCallback``: the same
tables, a slower start, and one line saying why (``stock_reason()``).
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import inspect
import os
from typing import Any, Callable, Optional

STOCK_ENV = "CNNC_RAY_STOCK"  # =1: always Ray's stock trainer (README)

# Ray Train flags cnnc sets (cluster.RAY_ENV), each defined in Ray's _internal constants.
TRAIN_FLAGS = {
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",  # an extra actor per run; nothing preempts a laptop
    "RAY_TRAIN_ENABLE_STATE_ACTOR_RECONCILIATION": "0",  # a polling actor per run, for the dashboard only
    "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",  # duplicate prints
    "RAY_TRAIN_ENABLE_CONTROLLER_STRUCTURED_LOGGING": "0",
    "RAY_TRAIN_ENABLE_WORKER_STRUCTURED_LOGGING": "0",
    "RAY_TRAIN_V2_ENABLED": "1",
    "RAY_TRAIN_METRICS_ENABLED": "0",  # Prometheus metrics callbacks per run
    # The controller takes one report off a worker per poll, and a worker's next report waits
    # for that: Ray's 2 s poll put 2-4 s of waiting into every trial (start, last epoch, end).
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5",
}
_TRAIN_CONSTANTS = "ray.train.v2._internal.constants"

# (module, attribute) -> the parameters its signature must have (None: only that it exists).
_V2 = "ray.train.v2._internal"
EXPECTED: dict[tuple[str, str], Optional[tuple[str, ...]]] = {
    (f"{_V2}.execution.controller.controller", "TrainController"):
        ("train_fn_ref", "train_run_context", "scaling_policy", "failure_policy", "callbacks", "validation_config"),
    (f"{_V2}.execution.controller.controller", "TrainController.run"): ("self",),
    (f"{_V2}.execution.controller.controller", "TrainController.get_result"): ("self",),
    ("ray.train.torch", "TorchTrainer._initialize_and_run_controller"): ("self", "controller_init_kwargs"),
    ("ray.train.torch", "TorchTrainer._create_default_callbacks"): ("self",),
    (f"{_V2}.callbacks.datasets", "DatasetsCallback"): None,
    (f"{_V2}.callbacks.placement_group_callback", "PlacementGroupCleanerCallback"): None,
    (f"{_V2}.execution.scaling_policy.fixed", "FixedScalingPolicy"): ("scaling_config",),
    (f"{_V2}.execution.scaling_policy.fixed", "FixedScalingPolicy._maybe_send_resource_request"): ("self",),
    (f"{_V2}.execution.scaling_policy.fixed", "FixedScalingPolicy._send_resource_request"): ("self",),
    (f"{_V2}.execution.scaling_policy.fixed", "FixedScalingPolicy._cancel_resource_request"): ("self",),
    (f"{_V2}.execution.worker_group.worker_group", "WorkerGroup.abort"): ("self",),
    ("ray", "init"): ("_temp_dir",),
    ("ray._private.state", "actors"): None,
}


def _resolve(module: str, attr: str) -> Any:
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _check(module: str, attr: str, params: Optional[tuple[str, ...]]) -> Optional[str]:
    """None where ``module.attr`` exists with (at least) ``params``; else what is wrong."""
    name = f"{module}.{attr}"
    try:
        obj = _resolve(module, attr)
    except (ImportError, AttributeError):
        return f"{name} is gone"
    if params is None:
        return None
    try:
        have = set(inspect.signature(obj).parameters)
    except (TypeError, ValueError):
        return f"{name} has no readable signature"
    # A private keyword Ray pops from **kwargs (ray.init's _temp_dir) counts where its docstring names it.
    takes_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in inspect.signature(obj).parameters.values())
    missing = [p for p in params if p not in have and not (takes_kwargs and f"``{p}``" in (obj.__doc__ or ""))]
    return f"{name} lacks parameter(s) {', '.join(missing)}" if missing else None


def problems() -> list[str]:
    """Every private name that moved or changed in the installed Ray (empty: all as expected)."""
    found = [p for (m, a), params in EXPECTED.items() if (p := _check(m, a, params))]
    found += [f"{_TRAIN_CONSTANTS} no longer defines {flag}" for flag in missing_flags()]
    return found + _attribute_problems()


def missing_flags() -> list[str]:
    try:
        constants = importlib.import_module(_TRAIN_CONSTANTS)
    except ImportError:
        return list(TRAIN_FLAGS)
    defined = {v for v in vars(constants).values() if isinstance(v, str)}
    return [flag for flag in TRAIN_FLAGS if flag not in defined]


def _trainer_problems() -> list[str]:
    found = [p for (m, a), params in EXPECTED.items() if m != "ray" and m != "ray._private.state"
             and (p := _check(m, a, params))]
    return found + _attribute_problems()


def _attribute_problems() -> list[str]:
    """Instance attributes cannot be looked up before an instance exists: read the source instead."""
    try:
        controller = _resolve(f"{_V2}.execution.controller.controller", "TrainController")
        source = inspect.getsource(controller.__init__)
    except (ImportError, AttributeError, OSError, TypeError):
        return ["TrainController.__init__ unreadable"]
    return [] if "self._worker_group" in source else ["TrainController no longer sets self._worker_group"]


_TRAINER_PROBLEMS: Optional[list[str]] = None


def stock_reason() -> Optional[str]:
    """Why trials run on Ray's stock TorchTrainer, or None where cnnc's lean one is used."""
    global _TRAINER_PROBLEMS
    if os.environ.get(STOCK_ENV, "").strip() not in ("", "0"):
        return f"{STOCK_ENV} is set"
    if _TRAINER_PROBLEMS is None:
        _TRAINER_PROBLEMS = _trainer_problems()
    if _TRAINER_PROBLEMS:
        import ray

        return f"Ray {ray.__version__}'s Train internals changed ({'; '.join(_TRAINER_PROBLEMS)})"
    return None


# --------------------------------------------------------------------------- the lean trainer


@functools.cache
def lean_trainer_class() -> type:
    """A TorchTrainer whose ``fit()`` runs its controller in the calling process (a Tune trial driver).

    Built on call, so that importing this module never touches the internals it checks.
    ``pg_cleaner=False`` drops the placement-group cleaner (a cluster without a dashboard).
    """
    from ray.train.torch import TorchTrainer
    from ray.train.v2._internal.callbacks.datasets import DatasetsCallback
    from ray.train.v2._internal.callbacks.placement_group_callback import PlacementGroupCleanerCallback
    from ray.train.v2._internal.execution.controller.controller import TrainController
    from ray.train.v2._internal.execution.scaling_policy.fixed import FixedScalingPolicy

    class FixedWithoutDataCoordinator(FixedScalingPolicy):
        """Ray's fixed-size policy, minus the resource requests to Ray Data's autoscaling coordinator
        (they only tell Ray Data's autoscaler what Train holds; the placement group itself reserves
        the workers' resources)."""

        def _maybe_send_resource_request(self) -> None:
            pass

        def _send_resource_request(self) -> None:
            pass

        def _cancel_resource_request(self) -> None:
            pass

    class LeanTorchTrainer(TorchTrainer):
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
            try:
                asyncio.run(controller.run())
            except SystemExit:  # Tune stopped the trial (ASHA) inside a report: end its workers too
                _abort_workers(controller)
                raise
            return controller.get_result()

    LeanTorchTrainer.policy_class = FixedWithoutDataCoordinator  # for the override check of the tests
    return LeanTorchTrainer


def _abort_workers(controller: Any) -> None:
    """A stopped trial's workers and placement group go now: Tune reuses its driver process, which
    owns them, so nothing else would end them and the next trials would wait for their CPUs."""
    group = getattr(controller, "_worker_group", None)
    if group is not None:
        try:
            group.abort()
        except Exception:  # noqa: BLE001 - already shut down: nothing left to end
            pass


def overridden_but_missing() -> list[str]:
    """Methods the lean classes override that their Ray base no longer has: a rename upstream would
    otherwise leave them silently unused."""
    lean = lean_trainer_class()
    found = []
    for cls in (lean, lean.policy_class):
        base = cls.__mro__[1]
        found += [f"{base.__name__}.{name}" for name in vars(cls)
                  if inspect.isfunction(vars(cls)[name]) and not name.startswith("__") and not hasattr(base, name)]
    return found


# --------------------------------------------------------------------------- ray.init and state


def init_temp_dir_kwargs(temp_dir: str) -> dict:
    """``ray.init`` keyword for a private temp folder, where this Ray still takes it."""
    return {"_temp_dir": temp_dir} if _check("ray", "init", ("_temp_dir",)) is None else {}


def actor_class_names() -> list[str]:
    """The class of every actor the connected cluster has run, dead ones too (no dashboard needed)."""
    actors: Callable[[], dict] = _resolve("ray._private.state", "actors")
    return [a["ActorClassName"] for a in actors().values()]
