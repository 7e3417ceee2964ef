"""Recipe search: each experiment gets its own searcher and its own ASHA, on one shared cluster.

One Tune run holds every experiment's trials, so they share the cluster (``max_concurrent_trials``);
``GroupedSearcher`` and ``GroupedASHA`` keep one searcher and one ASHA scheduler per experiment
behind Tune's single-searcher, single-scheduler interfaces, so a trial is only ever compared with
trials of its own experiment and a weak architecture is not starved by a strong one.

Trials are named ``<experiment>-<k>`` (k counts from 00). With ``algorithm: random`` the k-th
recipe of an experiment depends only on the seed, the experiment and k, never on which trial
finished first: a resumed search draws the recipes an uninterrupted one would.
"""

from __future__ import annotations

import base64
import hashlib
import json
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
from ray import tune
from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher

from ..config import Experiment, SearchConfig, with_values
from ..run.io import atomic_path


def domain(dist: dict[str, list[Any]]) -> Any:
    """A ``search.space`` entry as Tune's distribution (randint: high excluded, as in Tune)."""
    kind, args = next(iter(dist.items()))
    if kind == "choice":
        return tune.choice(args)
    if kind == "randint":
        return tune.randint(int(args[0]), int(args[1]))
    if kind == "quniform":
        return tune.quniform(*args)
    return {"uniform": tune.uniform, "loguniform": tune.loguniform}[kind](*args)


def draw(space: dict[str, dict], seed: int, group: str, k: int) -> dict[str, Any]:
    """The k-th random recipe of an experiment: a function of (seed, experiment, k) alone."""
    digest = hashlib.sha256(f"{seed}/{group}/{k}".encode()).digest()
    rng = np.random.RandomState(int.from_bytes(digest[:4], "little"))
    return {key: _plain(domain(dist).sample(random_state=rng)) for key, dist in space.items()}


def _plain(value: Any) -> Any:
    """numpy scalars to Python ones: they go into YAML, JSON and Parquet."""
    return value.item() if isinstance(value, np.generic) else value


def trial_name(group: str, k: int) -> str:
    return f"{group}-{k:02d}"


def trial_config(base: Experiment, k: int, values: dict[str, Any]) -> dict:
    """What one search trial receives: its recipe, and that it is not evaluated on test."""
    exp = with_values(base, values, trial_name(base.name, k))
    return {"experiment": exp.model_dump(mode="json"), "group": base.name, "sample": k, "values": values,
            "test": False}


class GroupedSearcher(Searcher):
    """``num_samples`` suggestions per experiment, taken in turn, each from that experiment's own
    searcher: seeded draws (``random``) or one Optuna study per experiment (``optuna``)."""

    def __init__(self, search: SearchConfig, experiments: list[Experiment]):
        super().__init__(metric=search.metric, mode="max")
        self.search = search
        self.experiments = {e.name: e for e in experiments}
        self.counts = {e.name: 0 for e in experiments}  # suggestions made so far, per experiment
        self.owner: dict[str, str] = {}  # Tune's trial id -> experiment
        self.optuna = {e.name: self._optuna(search, i) for i, e in enumerate(experiments)} \
            if search.algorithm == "optuna" else {}

    @staticmethod
    def _optuna(search: SearchConfig, i: int) -> Any:
        from ray.tune.search.optuna import OptunaSearch

        space = OptunaSearch.convert_search_space({key: domain(dist) for key, dist in search.space.items()})
        return OptunaSearch(space=space, metric=search.metric, mode="max", seed=search.seed + i)

    def suggest(self, trial_id: str) -> Optional[dict]:
        open_ = [g for g, n in self.counts.items() if n < self.search.num_samples]
        if not open_:
            return Searcher.FINISHED
        group = min(open_, key=lambda g: self.counts[g])  # in turn: every experiment moves on together
        k = self.counts[group]
        if group in self.optuna:
            values = {key: _plain(v) for key, v in self.optuna[group].suggest(trial_id).items()}
        else:
            values = draw(self.search.space, self.search.seed, group, k)
        self.counts[group] += 1
        self.owner[trial_id] = group
        return trial_config(self.experiments[group], k, values)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        sub = self.optuna.get(self.owner.get(trial_id, ""))
        if sub is not None:
            sub.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: Optional[dict] = None, error: bool = False) -> None:
        sub = self.optuna.get(self.owner.get(trial_id, ""))
        if sub is not None:
            sub.on_trial_complete(trial_id, result, error)

    def set_search_properties(self, metric: Optional[str], mode: Optional[str], config: dict, **spec: Any) -> bool:
        return True  # metric and mode come from the sweep file; there is no param_space

    # Tune saves the searcher beside its experiment state and restores it on resume. Plain JSON:
    # the counts, which trial is whose, and each Optuna study as its own save() wrote it.
    def save(self, checkpoint_path: str) -> None:
        studies = {}
        with tempfile.TemporaryDirectory() as tmp:
            for group, sub in self.optuna.items():
                sub.save(f"{tmp}/{group}")
                studies[group] = base64.b64encode(Path(f"{tmp}/{group}").read_bytes()).decode()
        Path(checkpoint_path).write_text(json.dumps({"counts": self.counts, "owner": self.owner,
                                                     "optuna": studies}))

    def restore(self, checkpoint_path: str) -> None:
        state = json.loads(Path(checkpoint_path).read_text())
        self.counts.update(state["counts"])
        self.owner.update(state["owner"])
        with tempfile.TemporaryDirectory() as tmp:
            for group, blob in state["optuna"].items():
                Path(f"{tmp}/{group}").write_bytes(base64.b64decode(blob))
                self.optuna[group].restore(f"{tmp}/{group}")


class GroupedASHA(TrialScheduler):
    """One ``AsyncHyperBandScheduler`` per experiment (``epoch`` as time, each experiment's epochs as
    its ``max_t``). A trial in its last epoch is never stopped: it has nothing left to save.

    Tune does not save schedulers with its experiment state, so every result also saves the ASHAs
    (their own ``save``) into ``state_dir``, and a resumed sweep starts from the rungs they reached."""

    def __init__(self, search: SearchConfig, experiments: list[Experiment], state_file: Callable[[str], Path]):
        super().__init__()
        self.state_file = state_file  # experiment -> where its rungs are saved (RunDir.asha_state)
        self.epochs = {e.name: e.train.epochs for e in experiments}
        self.asha = {e.name: AsyncHyperBandScheduler(
            time_attr="epoch", metric=search.metric, mode="max", max_t=max(e.train.epochs, 1),
            grace_period=min(search.grace_period, e.train.epochs), reduction_factor=search.reduction_factor,
            stop_last_trials=False) for e in experiments}
        self.fifo = FIFOScheduler()
        self.loaded = False

    def __getstate__(self) -> dict:  # pickled with the Tuner before any result: starts unloaded
        return {**self.__dict__, "loaded": False}

    def _of(self, trial: Any) -> AsyncHyperBandScheduler:
        if not self.loaded:
            self.loaded = True
            for group, asha in self.asha.items():
                if self.state_file(group).is_file():
                    asha.restore(str(self.state_file(group)))
        return self.asha[trial.config["group"]]

    def _save(self, group: str) -> None:
        with atomic_path(self.state_file(group)) as tmp:
            self.asha[group].save(str(tmp))

    def set_search_properties(self, metric: Optional[str], mode: Optional[str], **spec: Any) -> bool:
        return True

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        # Also for a restored trial: with ASHA's one bracket, adding it again changes nothing.
        self._of(trial).on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        group = trial.config["group"]
        action = self._of(trial).on_trial_result(tune_controller, trial, result)
        self._save(group)
        if result.get("epoch", 0) >= self.epochs[group]:
            return TrialScheduler.CONTINUE  # its last epoch: let it report its final numbers
        return action

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        self._of(trial).on_trial_complete(tune_controller, trial, result)
        self._save(trial.config["group"])

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        self._of(trial).on_trial_remove(tune_controller, trial)

    def choose_trial_to_run(self, tune_controller: Any) -> Optional[Any]:
        return self.fifo.choose_trial_to_run(tune_controller)

    def debug_string(self) -> str:
        return "\n".join(f"{g}: {a.debug_string()}" for g, a in self.asha.items())
