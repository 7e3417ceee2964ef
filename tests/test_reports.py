"""The trial protocol: what a worker reports goes through Tune's flat dict and comes back typed, and
every reader (status, progress, tables) takes it from there."""

from __future__ import annotations

from dataclasses import fields

import pytest

from cnn_cluster.run.reports import EpochReport, FailedReport, FinalReport, parse
from cnn_cluster.run.schemas import EPOCHS_SCHEMA
from cnn_cluster.run.trials import trial_status

EPOCH = EpochReport(epoch=3, train_loss=2.1, train_acc=0.4, val_loss=2.3, val_acc=0.35, seconds=12.0,
                    images_per_s=800.0)
FINAL = FinalReport(epoch=10, best_epoch=9, best_val_acc=0.41, precision="bf16", rank_nodes=["h"],
                    rank_node_ids=["n"], test_acc=0.4, test_images=500, node="h", node_id="n")
TUNE = {"trial_id": "abc", "timestamp": 1.0, "pid": 7, "training_iteration": 3, "worker_pid": 9}  # Tune's own


@pytest.mark.parametrize("report", [EPOCH, FINAL, FailedReport("boom"),
                                    FinalReport(epoch=4, best_epoch=4, best_val_acc=0.3, precision="fp32",
                                                rank_nodes=["a", "b"], rank_node_ids=["x", "y"])])
def test_a_report_survives_tunes_dict(report):
    assert parse({**TUNE, **report.to_metrics()}) == report


def test_a_metrics_table_row_with_gaps_is_an_epoch():
    """Tune's metrics table has every column of every report: an epoch row's final-only cells are NaN."""
    row = {**TUNE, **EPOCH.to_metrics(), "train_failed": float("nan"), "best_epoch": float("nan"), "restored": None}
    assert parse(row) == EPOCH
    assert parse(TUNE) is None and parse(None) is None


def test_status_from_the_last_report():
    assert trial_status(None, FINAL.to_metrics()) == "finished"
    assert trial_status(None, FINAL.as_restored().to_metrics()) == "finished"
    assert trial_status(None, EPOCH.to_metrics()) == "stopped"  # completed after an epoch: ASHA stopped it
    assert trial_status(None, FailedReport("x").to_metrics()) == "failed"
    assert trial_status(RuntimeError("lost"), FINAL.to_metrics()) == "failed"
    assert trial_status(None, {}) == "failed"


def test_the_epochs_table_is_the_epoch_report():
    """A field added to EpochReport is a column of epochs.parquet, and a row fits the schema."""
    assert EPOCHS_SCHEMA.names == ["trial", *(f.name for f in fields(EpochReport))]
    assert str(EPOCHS_SCHEMA.field("epoch").type) == "int32"
    import pyarrow as pa

    assert pa.Table.from_pylist([EPOCH.row("exp1")], schema=EPOCHS_SCHEMA).num_rows == 1


def test_a_final_row_of_the_metrics_table_is_never_an_epoch():
    """Tune's table flattens a final report beside the epochs: it parses as final (its lists may be
    gone), so the epoch rows read from the table hold only epochs."""
    row = {**TUNE, "epoch": 10, "final": 1, "best_epoch": 9, "best_val_acc": 0.41, "val_acc": 0.41,
           "train_loss": float("nan")}
    assert parse(row) == FinalReport(epoch=10, best_epoch=9, best_val_acc=0.41)
