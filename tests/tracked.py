"""What a tracker holds, read back with its own reader and compared with the run's Parquet tables
(tests/test_tracking.py, tests/test_search.py)."""

from __future__ import annotations

import glob
import struct
from pathlib import Path

import pytest

from cnn_cluster.run.io import read_table
from cnn_cluster.tracking.fields import EPOCH_METRICS, final_metrics, row_params


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _runs(uri: str, experiment: str) -> tuple[object, dict[str, object]]:
    """The sweep's parent run and its trials' runs (by trial name)."""
    client = _client(uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=100)
    parents = [r for r in runs if r.data.tags.get("cnnc.role") == "sweep"]
    assert len(parents) == 1, [r.data.tags for r in runs]
    children = {r.data.tags["cnnc.trial"]: r for r in runs if r.data.tags.get("cnnc.role") == "trial"}
    assert len(children) == len(runs) - 1
    for r in children.values():
        assert r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
    return parents[0], children


def check_mlflow(uri: str, experiment: str, run: Path) -> dict:
    """The sweep's MLflow runs against its tables; returns the trials' runs by name."""
    client = _client(uri)
    parent, children = _runs(uri, experiment)
    trials, epochs = read_table(run / "trials.parquet"), read_table(run / "epochs.parquet")
    assert sorted(children) == sorted(t["trial"] for t in trials)
    for t in trials:
        child = children[t["trial"]]
        assert child.data.params == row_params(t)
        assert child.data.tags["cnnc.status"] == t["status"] and child.data.tags["cnnc.run_folder"] == str(run)
        mine = {e["epoch"]: e for e in epochs if e["trial"] == t["trial"]}
        for key in EPOCH_METRICS:
            history = client.get_metric_history(child.info.run_id, key)
            assert sorted((m.step, m.value) for m in history) == sorted((s, e[key]) for s, e in mine.items()), key
        for key, value in final_metrics(t).items():
            assert child.data.metrics[key] == pytest.approx(value), key
    files = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert "config.yaml" in files and ({"index.html", "experiments.csv"} <= files) == (run / "report").is_dir()
    return children


def check_tensorboard(run: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    trials, epochs = read_table(run / "trials.parquet"), read_table(run / "epochs.parquet")
    for t in trials:
        acc = EventAccumulator(str(run / "tensorboard" / t["trial"]))
        acc.Reload()
        mine = {e["epoch"]: e for e in epochs if e["trial"] == t["trial"]}
        for key in EPOCH_METRICS:
            got = [(s.step, s.value) for s in acc.Scalars(key)]
            assert [s for s, _ in got] == sorted(mine), key  # each epoch once
            assert [v for _, v in got] == pytest.approx([mine[s][key] for s, _ in got], rel=1e-6), key
        hp = EventAccumulator(str(run / "tensorboard" / t["trial"] / "hparams"))
        hp.Reload()
        assert "hparams" in hp.PluginTagToContent("hparams") or hp.PluginTagToContent("hparams")
        if t["test_acc"] is not None:
            assert hp.Scalars("test_acc")[0].value == pytest.approx(t["test_acc"], rel=1e-6)


def wandb_records(path: Path) -> list:
    """The records of a W&B offline run file: LevelDB's log format (32 KiB blocks of checksum,
    length, type + payload) after W&B's 7-byte header, each payload one ``Record`` protobuf. W&B ships
    no public reader of it; this reads what ``wandb sync`` would upload."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, block, out, part = path.read_bytes(), 7, 32768, [], b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0 and length == 0:
            break
        part += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST
            record = pb.Record()
            record.ParseFromString(part)
            out.append(record)
            part = b""
    return out


def check_wandb(run: Path) -> None:
    trials, epochs = read_table(run / "trials.parquet"), read_table(run / "epochs.parquet")
    files = [Path(p) for p in glob.glob(str(run / "wandb" / "offline-run-*" / "run-*.wandb"))]
    by_name = {}
    for f in files:
        records = wandb_records(f)
        name = next(r.run.display_name for r in records if r.WhichOneof("record_type") == "run")
        assert name not in by_name, f"two offline runs for {name}"
        by_name[name] = records
    assert sorted(by_name) == sorted(t["trial"] for t in trials)
    for t in trials:
        history = {}
        summary = {}
        for r in by_name[t["trial"]]:
            kind = r.WhichOneof("record_type")
            if kind == "history":
                items = {i.key or "/".join(i.nested_key): float(i.value_json) for i in r.history.item
                         if not (i.key or "/".join(i.nested_key)).startswith("_")}
                history[r.history.step.num] = items
            elif kind == "summary":
                summary.update({i.key: i.value_json for i in r.summary.update if i.key})
        mine = {e["epoch"]: e for e in epochs if e["trial"] == t["trial"]}
        assert sorted(history) == sorted(mine)
        for step, items in history.items():
            assert items == pytest.approx({k: mine[step][k] for k in EPOCH_METRICS})
        assert float(summary["test_acc"]) == pytest.approx(t["test_acc"])
