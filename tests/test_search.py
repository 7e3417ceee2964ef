"""Recipe search: per-experiment searchers and ASHA on a real local Ray, the test split left to
each experiment's best trial, best.yaml, resume after SIGKILL; config errors named."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from ray.tune.experiment import Trial
from ray.tune.schedulers import TrialScheduler
from typer.testing import CliRunner

from cnn_cluster.cli import app
from cnn_cluster.config import load_config, validate
from cnn_cluster.errors import ConfigError
from cnn_cluster.run.paths import RunDir
from cnn_cluster.sweep.search import GroupedASHA, GroupedSearcher, draw
from cnn_cluster.sweep.submit import Outcome, submit

from tiny import tiny_config
from catalogue import documented

CNNC = str(Path(sys.executable).with_name("cnnc"))
runner = CliRunner()
SPACE = {"train.lr": {"loguniform": [1.0e-5, 3.0e-2]}, "train.dropout": {"uniform": [0.0, 0.5]},
         "train.batch_norm": {"choice": [True, False]}}


def search_config(tmp_path: Path, **search) -> dict:
    """Two experiments x 3 recipes x 3 epochs on 4 classes; one trial at a time, so ASHA sees the
    results in one order and two runs of the same seed agree."""
    return tiny_config(tmp_path, data={"image_size": 32, "synthetic": {"classes": 4, "images_per_class": 60}},
                       train={"epochs": 3, "batch_size": 16},
                       search={"num_samples": 3, "grace_period": 1, "reduction_factor": 2, "space": SPACE, **search},
                       resources={"max_concurrent_trials": 1})


# --------------------------------------------------------------------------- without Ray


def test_draws_depend_on_seed_experiment_and_sample_only():
    a = [draw(SPACE, 0, "a", k) for k in range(20)]
    assert a == [draw(SPACE, 0, "a", k) for k in range(20)]
    assert a != [draw(SPACE, 1, "a", k) for k in range(20)] and a != [draw(SPACE, 0, "b", k) for k in range(20)]
    assert all(1e-5 <= v["train.lr"] <= 3e-2 and 0 <= v["train.dropout"] <= 0.5 for v in a)
    assert {v["train.batch_norm"] for v in a} == {True, False}
    assert all(type(v["train.lr"]) is float for v in a)  # plain Python: it goes to YAML and JSON


def test_each_experiment_gets_its_samples_in_turn_and_the_searcher_resumes(tmp_path):
    cfg = validate(search_config(tmp_path, num_samples=2))
    searcher = GroupedSearcher(cfg.search, cfg.resolved_experiments())
    first = [searcher.suggest(f"t{i}") for i in range(2)]
    searcher.save(str(tmp_path / "state.pkl"))
    rest = [searcher.suggest(f"t{i}") for i in range(2, 5)]
    assert [c["experiment"]["name"] for c in first + rest[:2]] == ["a-00", "b-00", "a-01", "b-01"]
    assert rest[2] == GroupedSearcher.FINISHED
    assert all(c["test"] is False for c in first)  # no search trial meets the test split
    assert first[0]["experiment"]["train"]["lr"] == first[0]["values"]["train.lr"]
    again = GroupedSearcher(cfg.search, cfg.resolved_experiments())
    again.restore(str(tmp_path / "state.pkl"))
    assert [again.suggest(f"t{i}") for i in range(2, 5)] == rest


def test_asha_compares_a_trial_with_its_own_experiment_only(tmp_path):
    cfg = validate(search_config(tmp_path, num_samples=4))
    asha = GroupedASHA(cfg.search, cfg.resolved_experiments(), RunDir(tmp_path).asha_state)

    def trial(group: str, k: int) -> Trial:
        t = Trial("f", config={"group": group, "experiment": {"name": f"{group}-{k:02d}"}}, stub=True)
        asha.on_trial_add(None, t)
        return t

    strong = [trial("a", k) for k in range(3)]
    for t, acc in zip(strong, (0.9, 0.8, 0.85)):
        asha.on_trial_result(None, t, {"epoch": 1, "val_acc": acc})
    weak = trial("b", 0)  # far below experiment a's trials, but the first of its own
    assert asha.on_trial_result(None, weak, {"epoch": 1, "val_acc": 0.3}) == TrialScheduler.CONTINUE
    assert asha.on_trial_result(None, trial("b", 1), {"epoch": 1, "val_acc": 0.1}) == TrialScheduler.STOP
    last = trial("b", 2)  # in its last epoch, nothing is left to save: never stopped
    assert asha.on_trial_result(None, last, {"epoch": 3, "val_acc": 0.0}) == TrialScheduler.CONTINUE
    # The rungs survive a restart of the sweep's driver (Tune does not save schedulers).
    again = GroupedASHA(cfg.search, cfg.resolved_experiments(), RunDir(tmp_path).asha_state)
    late = Trial("f", config={"group": "b", "experiment": {"name": "b-03"}}, stub=True)
    again.on_trial_add(None, late)
    assert again.on_trial_result(None, late, {"epoch": 1, "val_acc": 0.05}) == TrialScheduler.STOP


SEARCH_ERRORS = [  # (case, search section, expected line)
    ("unknown-field", {"space": {"train.lrate": {"uniform": [0, 1]}}},
     "search.space.train.lrate: unknown field; did you mean 'train.lr'?"),
    ("empty-range", {"space": {"train.lr": {"loguniform": [1.0e-2, 1.0e-4]}}},
     "search.space.train.lr.loguniform: empty range: low 0.01 must be below high 0.0001"),
    ("float-for-int", {"space": {"train.epochs": {"uniform": [1, 3]}}},
     "search.space.train.epochs.uniform: this field takes integers; use randint, or quniform with whole numbers"),
    ("range-for-bool", {"space": {"train.batch_norm": {"uniform": [0, 1]}}},
     "search.space.train.batch_norm.uniform: this field takes listed values only; use {choice: [...]}"),
    ("value-out-of-range", {"space": {"train.dropout": {"uniform": [0.0, 1.5]}}},
     "search.space.train.dropout.uniform: 1.5 is not a valid train.dropout for a"),
    ("no-distribution", {"space": {"train.lr": {"normal": [0, 1]}}},
     "search.space.train.lr: give exactly one distribution, one of choice, uniform, loguniform, randint, quniform"),
    ("unknown-scheduler", {"scheduler": "hyperband"}, "search.scheduler: must be one of none or asha"),
]


@pytest.mark.parametrize("case,search,expected", SEARCH_ERRORS, ids=[c[0] for c in SEARCH_ERRORS])
def test_search_config_errors_are_named(case, search, expected, tmp_path):
    cfg = search_config(tmp_path)
    cfg["search"] = {**cfg["search"], **search}
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(cfg))
    result = runner.invoke(app, ["submit", str(path), "--no-dashboard"])
    assert result.exit_code == 2, result.output
    assert result.output.startswith(f"error: {path}: {expected}"), result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()  # refused before Ray or a run folder


def test_optuna_is_named_when_not_installed(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)  # an environment without the search extra
    with pytest.raises(ConfigError) as err:
        validate(search_config(tmp_path, algorithm="optuna"))
    assert str(err.value) == f"config: {documented('search-optuna-missing')}"


def test_optuna_keeps_one_study_per_experiment_and_resumes(tmp_path):
    pytest.importorskip("optuna", reason="the search extra (pip install 'cnn-cluster[search]') is not installed")
    cfg = validate(search_config(tmp_path, algorithm="optuna", num_samples=3))
    searcher = GroupedSearcher(cfg.search, cfg.resolved_experiments())
    seen = []
    for i in range(4):
        config = searcher.suggest(f"t{i}")
        seen.append(config)
        searcher.on_trial_complete(f"t{i}", {"val_acc": 0.9 if config["group"] == "a" else 0.1, "epoch": 3})
    assert [c["experiment"]["name"] for c in seen] == ["a-00", "b-00", "a-01", "b-01"]
    studies = {g: s._ot_study for g, s in searcher.optuna.items()}  # Ray's OptunaSearch: a test may look inside
    assert [len(studies[g].trials) for g in "ab"] == [2, 2]  # each study saw its own experiment's trials
    assert {t.value for t in studies["a"].trials} == {0.9} and {t.value for t in studies["b"].trials} == {0.1}
    for c in seen:
        lr = c["values"]["train.lr"]
        assert 1e-5 <= lr <= 3e-2 and c["experiment"]["train"]["lr"] == lr
    searcher.save(str(tmp_path / "state.pkl"))
    again = GroupedSearcher(cfg.search, cfg.resolved_experiments())
    again.restore(str(tmp_path / "state.pkl"))
    assert [again.suggest("t4")["experiment"]["name"], again.suggest("t5")["experiment"]["name"]] == ["a-02", "b-02"]
    assert again.suggest("t6") == GroupedSearcher.FINISHED


# --------------------------------------------------------------------------- a real search


def _trials(run: Path) -> list[dict]:
    return pq.read_table(run / "trials.parquet").to_pylist()


def _same(trials: list[dict]) -> list[tuple]:
    """What two searches of one seed must share (seconds and nodes aside)."""
    return [(t["trial"], t["status"], t["searched"], t["epochs_run"], t["val_acc"], t["test_acc"]) for t in trials]


@pytest.fixture(scope="module")
def search_outcome(ray_local, tmp_path_factory) -> Outcome:
    tmp = tmp_path_factory.mktemp("search")
    path = tmp / "search.yaml"
    path.write_text(yaml.safe_dump(search_config(tmp)))
    return submit(load_config(path))


@pytest.fixture(scope="module")
def searched(search_outcome) -> Path:
    assert search_outcome.failed == 0
    return search_outcome.run.root


@pytest.mark.slow
def test_a_search_tests_only_each_experiments_best_and_stops_the_weak(search_outcome, searched):
    trials = _trials(searched)
    status = [t["status"] for t in trials]
    assert (search_outcome.finished, search_outcome.stopped, search_outcome.failed) == \
        (status.count("finished"), status.count("stopped"), 0)  # a stopped trial is not counted finished
    assert search_outcome.counts() == f"{status.count('finished')} finished, {status.count('stopped')} stopped " \
        "by ASHA, 0 failed"
    assert [t["trial"] for t in trials] == ["a-00", "a-01", "a-02", "b-00", "b-01", "b-02"]
    epochs = pq.read_table(searched / "epochs.parquet").to_pylist()
    for group in "ab":
        mine = [t for t in trials if t["experiment"] == group]
        tested = [t for t in mine if t["test_acc"] is not None]
        assert len(tested) == 1  # the test split stays untouched by the rest of the search
        assert tested[0]["val_acc"] == max(t["val_acc"] for t in mine if t["status"] == "finished")
    stopped = [t for t in trials if t["status"] == "stopped"]
    assert stopped, "ASHA stopped no trial"
    for t in stopped:  # stopped, not failed: its epochs are kept
        assert t["error"] is None and t["test_acc"] is None and t["epochs_run"] < 3
        assert [e["epoch"] for e in epochs if e["trial"] == t["trial"]] == list(range(1, t["epochs_run"] + 1))
    for t in trials:  # the drawn values are the recipe the trial trained
        values = json.loads(t["searched"])
        assert (values["train.lr"], values["train.dropout"], values["train.batch_norm"]) == \
               (t["lr"], t["dropout"], t["batch_norm"])
    assert not any((searched / "checkpoints").glob("*-0[0-9].test_probs.npy")) or \
        {p.name.split(".")[0] for p in (searched / "checkpoints").glob("*.test_probs.npy")} == \
        {t["trial"] for t in trials if t["test_acc"] is not None}
    assert {p.stem for p in (searched / "checkpoints").glob("*.pt")} == \
        {t["trial"] for t in trials if t["test_acc"] is not None}  # only the tested weights are kept
    assert not list((searched / "train").glob("train-*"))  # nor Ray Train's storage of any trial


@pytest.mark.slow
def test_the_report_names_each_best_recipe_and_best_yaml_reproduces_it(searched, tmp_path):
    result = runner.invoke(app, ["report", str(searched)])
    assert result.exit_code == 0, result.output
    trials = _trials(searched)
    best = {t["experiment"]: t for t in trials if t["test_acc"] is not None}
    for group, t in best.items():
        assert f"{group}: best recipe {t['trial']}" in result.output
    for name in ("search.md", "search.png", "best.yaml", "index.html"):
        assert (searched / "report" / name).is_file()
    assert "Recipe search" in (searched / "report" / "index.html").read_text()
    cfg = load_config(searched / "report" / "best.yaml", [f"output.root={tmp_path / 'again'}"])
    assert cfg.search is None and [e.name for e in cfg.resolved_experiments()] == ["a", "b"]
    outcome = submit(cfg)
    again = {t["trial"]: t for t in _trials(outcome.run.root)}
    for group, t in best.items():  # the same recipe and seed train to the same numbers
        assert again[group]["lr"] == t["lr"]
        assert again[group]["val_acc"] == pytest.approx(t["val_acc"])
        assert again[group]["test_acc"] == pytest.approx(t["test_acc"])


@pytest.mark.slow
def test_a_search_killed_then_resumed_matches_the_uninterrupted_one(searched, tmp_path):
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(search_config(tmp_path)))
    proc = subprocess.Popen([CNNC, "submit", str(path), "--no-dashboard", "--no-report", "--num-cpus", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        seen = []
        for line in proc.stdout:
            seen.append(line)
            if "b-00: started" in line:  # a-00 .. a-02 behind it, ASHA's rungs of a recorded
                break
        assert any("b-00: started" in line for line in seen), "".join(seen)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    run = (tmp_path / "runs" / "latest").resolve()
    resumed = subprocess.run([CNNC, "submit", "--resume", str(run), "--no-dashboard", "--no-report",
                              "--num-cpus", "2"], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "a-00: epoch" not in resumed.stdout  # finished before the kill: not trained again
    assert _same(_trials(run)) == _same(_trials(searched))


@pytest.mark.slow
def test_a_search_is_tracked_with_its_stopped_trials_marked(searched, mlflow_server):
    """`cnnc track` of a finished search made without MLflow, twice: a run per trial with its drawn
    values, nothing doubled; ASHA's stopped trials read stopped (MLflow state KILLED)."""
    from tracked import check_mlflow, check_tensorboard

    for _ in range(2):
        r = subprocess.run([str(Path(sys.executable).with_name("cnnc")), "track", str(searched), "--mlflow",
                            mlflow_server.uri, "--mlflow-experiment", "search", "--tensorboard"],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0 and "mlflow: " in r.stdout and "trial(s) sent" in r.stdout, r.stdout + r.stderr
        runs = check_mlflow(mlflow_server.uri, "search", searched)
        check_tensorboard(searched)
    for t in _trials(searched):
        child = runs[t["trial"]]
        assert {k for k in child.data.params if k.startswith("search.")} == {f"search.{k}" for k in SPACE}
        assert child.info.status == {"finished": "FINISHED", "stopped": "KILLED"}[t["status"]]
    assert any(t["status"] == "stopped" for t in _trials(searched))
