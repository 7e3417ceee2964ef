"""Each epoch to the trackers as it ends: a Tune callback in the sweep's driver.

Every tracker gets its own sender thread and queue, so a slow or dead tracker never holds up Tune's
event loop (and with it, training). A tracker that fails once is named in one warning line and
stops receiving; the run folder keeps everything, and the send at the sweep's end (or ``cnnc
track`` later) completes the tracked runs. Tune pickles callbacks with its state: the threads are
made again in ``setup``, which a restored sweep calls too, and the trackers find their runs again.
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable

from ray.tune import Callback

from .. import logs
from ..config import Experiment, TrackingConfig
from ..run.paths import RunDir
from ..run.reports import EpochReport, parse
from .base import Tracker
from .fields import experiment_params, tags
from .send import make_trackers, reason, sweep_name

log = logs.get("tracking")
_ACTIVE: dict[str, "LiveTracking"] = {}  # run folder -> the callback Tune calls (a restored sweep's is unpickled)


class Sender:
    """One tracker's calls, in order, on one thread; after a failure, nothing more."""

    def __init__(self, tracker: Tracker):
        self.tracker, self.error, self.skipped = tracker, None, 0
        self.calls: queue.Queue = queue.Queue()
        self.thread = threading.Thread(target=self._loop, name=f"cnnc-{tracker.name}", daemon=True)
        self.thread.start()

    def send(self, fn: Callable, *args: Any) -> None:
        self.calls.put((fn, args))

    def _loop(self) -> None:
        while True:
            item = self.calls.get()
            if item is None:
                return
            fn, args = item
            if self.error is not None:
                self.skipped += 1
                continue
            try:
                fn(*args)
            except Exception as exc:  # any tracker error: training goes on, the run folder keeps it
                self.error = reason(exc)
                log.warning(f"{self.tracker.name}: stopped sending live ({self.error}); training goes on")

    def close(self, timeout: float) -> None:
        self.calls.put(None)
        self.thread.join(timeout)


class LiveTracking(Callback):
    def __init__(self, tracking: TrackingConfig, run: RunDir):
        self.tracking, self.run = tracking, run
        self.senders: list[Sender] = []
        self.started: set[str] = set()

    def __getstate__(self) -> dict:  # threads do not pickle; setup() starts them again
        return {**self.__dict__, "senders": [], "started": set()}

    def setup(self, **info: Any) -> None:
        self.close()
        _ACTIVE[str(self.run.root)] = self
        sweep = sweep_name(self.run)
        for tracker in make_trackers(self.tracking, self.run):
            sender = Sender(tracker)
            sender.send(tracker.open, self.run.root, sweep)
            self.senders.append(sender)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        report = parse(result)
        if not isinstance(report, EpochReport):
            return
        config = trial.config
        name = config["experiment"]["name"]
        if name not in self.started:
            self.started.add(name)
            exp = Experiment.model_validate(config["experiment"])
            params = experiment_params(exp, config.get("values"))
            t = tags(str(self.run.root), name, config.get("group"), config.get("sample"), result.get("node"))
            for s in self.senders:
                s.send(s.tracker.trial, name, params, t)
        for s in self.senders:
            s.send(s.tracker.epochs, name, [report.row(name)])

    def close(self, timeout: float = 30.0) -> list[str]:
        """Wait for what is queued (at most ``timeout`` seconds per tracker); the names that failed.
        Closes the instance Tune called, which after a restore is not this one."""
        active = _ACTIVE.pop(str(self.run.root), self)
        if active is not self:
            return active.close(timeout)
        failed = []
        for s in self.senders:
            s.send(s.tracker.close, [], "running")
            s.close(timeout)
            if s.error is not None:
                failed.append(s.tracker.name)
        self.senders = []
        return failed
