"""A real local-Ray sweep at tiny scale: Tune trials, Ray Train workers, Parquet out."""

import json

import pyarrow.parquet as pq
import pytest
import torch
import yaml

from cnn_cluster.config import load_config, validate
from cnn_cluster.data import load_dataset
from cnn_cluster.errors import CnncError
from cnn_cluster.models import build_model, shapes
from cnn_cluster.report.build import build_report
from cnn_cluster.run.schemas import EPOCHS_SCHEMA, PREDICTIONS_SCHEMA, TRIALS_SCHEMA
from cnn_cluster.run.state import get_state
from cnn_cluster.sweep.submit import submit
from cnn_cluster.training.step import resolve_precision
from tiny import tiny_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def two_worker_run(ray_local, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sweep")
    cfg = validate(tiny_config(tmp, train={"epochs": 2}, resources={"workers_per_trial": 2}))
    return cfg, submit(cfg)


def test_tables_schema_and_values(two_worker_run):
    cfg, out = two_worker_run
    run = out.run
    assert pq.read_schema(run.trials).equals(TRIALS_SCHEMA)
    assert pq.read_schema(run.epochs).equals(EPOCHS_SCHEMA)
    assert pq.read_schema(run.predictions).equals(PREDICTIONS_SCHEMA)
    trials = pq.read_table(run.trials).to_pylist()
    data = load_dataset(cfg.data)
    assert [t["trial"] for t in trials] == ["a", "b"]
    for t, exp in zip(trials, cfg.resolved_experiments()):
        assert t["status"] == "finished" and t["error"] is None
        assert t["workers"] == 2 and t["node"]
        assert len(t["rank_nodes"]) == 2 and t["rank_nodes"][0] == t["node"]  # every rank's host, rank 0 first
        assert len(t["rank_node_ids"]) == 2 and t["rank_node_ids"][0] == t["node_id"]
        assert t["params"] == shapes(exp.model, 84, data.num_classes).params
        assert 0 <= t["test_acc"] <= 1 and 0 <= t["val_acc"] <= 1
        recipe = exp.train.model_dump(mode="json", exclude={"precision"})  # precision: as resolved
        assert {k: t[k] for k in recipe} == recipe  # every train field, as the trial ran it
        assert t["best_epoch"] in (1, 2) and t["images_per_s"] > 0
        assert list(t["conv_filters"]) == list(exp.model.conv_filters)
        assert t["precision"] == resolve_precision("auto", torch.device("cpu"))  # the choice made, per trial


def test_each_epoch_once_and_loss_falls(two_worker_run):
    _, out = two_worker_run
    epochs = pq.read_table(out.run.epochs).to_pylist()
    assert [(e["trial"], e["epoch"]) for e in epochs] == [("a", 1), ("a", 2), ("b", 1), ("b", 2)]
    a = [e for e in epochs if e["trial"] == "a"]
    assert a[1]["train_loss"] < a[0]["train_loss"]


def test_predictions_cover_the_test_split(two_worker_run):
    cfg, out = two_worker_run
    data = load_dataset(cfg.data)
    preds = pq.read_table(out.run.predictions).to_pylist()
    test = data.indices("test")
    assert sorted(p["index"] for p in preds) == sorted(test.tolist())
    for p in preds:
        assert p["true"] == data.labels[p["index"]]
        assert p["top5"][0] == p["pred"] and p["p_pred"] >= p["p_true"] - 1e-6
    trials = {t["trial"]: t for t in pq.read_table(out.run.trials).to_pylist()}
    acc = sum(p["pred"] == p["true"] for p in preds) / len(preds)
    assert acc == pytest.approx(trials[out.best]["test_acc"])


def test_best_checkpoint_reloads_and_reproduces(two_worker_run):
    cfg, out = two_worker_run
    data = load_dataset(cfg.data)
    saved = torch.load(out.run.checkpoint(out.best), weights_only=True)
    exp = next(e for e in cfg.resolved_experiments() if e.name == out.best)
    model = build_model(exp.model, data.num_classes, 84)
    model.load_state_dict(saved["model"])
    preds = pq.read_table(out.run.predictions).to_pylist()[:5]
    x = torch.from_numpy(data.images[[p["index"] for p in preds]].copy()).permute(0, 3, 1, 2).float() / 255
    x = (x - torch.tensor(data.mean).view(1, 3, 1, 1)) / torch.tensor(data.std).view(1, 3, 1, 1)
    probs = torch.softmax(model.eval()(x), 1)
    assert probs.argmax(1).tolist() == [p["pred"] for p in preds]


def test_run_folder_state_and_config(two_worker_run):
    cfg, out = two_worker_run
    assert load_config(out.run.config) == cfg
    state = get_state(out.run)
    assert state["state"] == "finished" and state["best"] == out.best
    assert set(state["precision"]) == {"a", "b"}
    assert yaml.safe_load(out.run.config.read_text())["name"] == "tiny"
    # Ray Train's storage of a finished trial (its last model and optimizer) is gone; checkpoints/ stays.
    assert not list(out.run.train_storage.glob("train-*")) and out.run.checkpoint(out.best).is_file()


def test_consecutive_trials_share_one_trial_driver_process(two_worker_run):
    """Two 2-CPU trials on 2 CPUs run one after the other; the second reuses the first's
    driver process (Tune records each result's process id), so it pays no start-up and
    imports again: the largest single cut of a sweep's per-trial fixed cost."""
    _, out = two_worker_run
    pids = {name: {json.loads(line)["pid"] for line in (out.run.tune / name / "result.json").read_text().splitlines()}
            for name in ("a", "b")}
    assert len(pids["a"]) == 1 and pids["a"] == pids["b"]


def test_each_train_run_starts_only_its_workers(two_worker_run):
    """Ray Train starts a controller, a Tune queue, a placement-group cleaner and a DatasetManager
    process for every run, and Ray Data's autoscaling coordinator once; ours run the controller in
    the trial driver, report straight to Tune, skip the coordinator (no Ray Data) and (no dashboard
    here: the cleaner could not work) start only the workers and their sync actor."""
    from cnn_cluster.training.ray_compat import actor_class_names

    started = actor_class_names()
    assert started.count("RayTrainWorker") >= 4 and started.count("SynchronizationActor") >= 2  # both runs seen
    for extra in ("TrainController", "_QueueActor", "PlacementGroupCleaner", "DatasetManager",
                  "_AutoscalingCoordinatorActor"):
        assert extra not in started, extra


def test_embedded_cluster_processes_inherit_ray_env(ray_local):
    """The embedded cluster has no job runtime env (it would put Ray's runtime-env setup in front
    of every trial process's start); its processes still see RAY_ENV, inherited from this one."""
    import os

    import ray

    from cnn_cluster.cluster import RAY_ENV

    @ray.remote(num_cpus=0)
    class Probe:
        def env(self) -> dict:
            return {key: os.environ.get(key) for key in RAY_ENV}

    probe = Probe.remote()
    try:
        assert ray.get(probe.env.remote()) == {key: os.environ[key] for key in RAY_ENV}
    finally:
        ray.kill(probe)
    assert not ray.get_runtime_context().runtime_env


def test_report_table_and_figures(two_worker_run):
    _, out = two_worker_run
    rep = build_report(out.run)
    lines = rep.table.splitlines()
    assert lines[0].split() == ["Experiment", "Conv", "Filters", "Conv", "Layers", "FC", "Layers", "Max", "Pooling",
                                "Stride", "Epochs", "Test", "Accuracy"]
    assert len(lines) == 4  # header, rule, two trials
    assert any(line.startswith(out.best + " *") for line in lines)
    names = {p.name for p in rep.files}
    assert {"experiments.md", "experiments.csv", "curves.png", "misclassified.png", "index.html",
            "README.md", "accuracy-vs-cost.png"} <= names
    for p in rep.files:
        assert p.stat().st_size > 100
    assert (out.run.report / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_impossible_resources_fail_fast_and_write_nothing(ray_local, tmp_path):
    cfg = validate(tiny_config(tmp_path, resources={"workers_per_trial": 3}))
    with pytest.raises(CnncError, match="resources: one trial needs 3 CPUs"):
        submit(cfg)
    assert not (tmp_path / "runs").exists()
