"""The study's figures beside a run's: matched by architecture, shown on mini-ImageNet runs only."""

from cnn_cluster.report.sections import _experiments
from cnn_cluster.study import TABLE1, study_row


def _trial(name, filters, fc, pool, stride, acc):
    return {"trial": name, "conv_filters": filters, "conv_layers": len(filters), "fc_layers": fc, "max_pool": pool,
            "stride": stride, "epochs": 10, "test_acc": acc, "val_acc": acc, "status": "finished",
            "params": 1e6, "flops": 1e6, "images_per_s": 100.0}


TRIALS = [_trial("a", [32, 64], [128], True, 1, 0.40), _trial("b", [32, 64, 128], [256, 128], True, 1, 0.44),
          _trial("c", [32, 64], [128], False, 2, 0.40), _trial("d", [8], [], True, 1, 0.1)]


def test_trials_meet_their_study_row_by_architecture_not_by_name():
    assert [study_row(t["conv_filters"], t["fc_layers"], t["max_pool"], t["stride"]) for t in TRIALS] == [
        *TABLE1, None]


def test_the_experiments_table_gives_the_study_figure_and_the_difference_on_mini_imagenet():
    table = _experiments(TRIALS, "b", mini_imagenet=True).blocks[0]
    col = table.columns.index("Study (difference, points)")
    assert [r[col] for r in table.rows] == ["41.66 % (-1.66)", "43.2 % (+0.80)", "below exp 2: yes (-4.00)", "-"]
    worse = [*TRIALS[:2], _trial("c", [32, 64], [128], False, 2, 0.45)]
    assert _experiments(worse, "b", mini_imagenet=True).blocks[0].rows[2][col] == "below exp 2: no (+1.00)"


def test_no_study_column_on_other_data():
    table = _experiments(TRIALS, "b", mini_imagenet=False).blocks[0]
    assert not any(c.startswith("Study") for c in table.columns)
