from pathlib import Path

import pytest
import yaml

from cnn_cluster.config import dump_config, load_config, validate
from cnn_cluster.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent
BASE = {"experiments": [{"conv_filters": [8], "fc_layers": [4]}]}


def _err(raw: dict) -> str:
    with pytest.raises(ConfigError) as exc:
        validate(raw)
    return str(exc.value)


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_validates(path):
    cfg = load_config(path)
    assert cfg.resolved_experiments()


def test_sweep_yaml_holds_the_study():
    exps = load_config(REPO / "configs" / "sweep.yaml").resolved_experiments()
    got = [(list(e.model.conv_filters), list(e.model.fc_layers), e.model.max_pool, e.model.stride, e.train.epochs)
           for e in exps]
    assert got == [([32, 64], [128], True, 1, 10), ([32, 64, 128], [256, 128], True, 1, 15),
                   ([32, 64], [128], False, 2, 20)]


def test_unknown_key_names_path_and_closest():
    msg = _err({**BASE, "train": {"lr_rate": 0.1}})
    assert "train.lr_rate" in msg and "did you mean 'lr'" in msg


def test_unknown_key_inside_experiment():
    msg = _err({"experiments": [{"conv_filters": [8], "fc_layer": [4]}]})
    assert "experiments.0.fc_layer" in msg and "fc_layers" in msg


def test_wrong_choice_lists_valid_ones():
    msg = _err({**BASE, "train": {"optimizer": "adamw"}})
    assert "train.optimizer" in msg and "adam" in msg and "sgd" in msg


def test_wrong_type_and_impossible_values():
    assert "train.epochs" in _err({**BASE, "train": {"epochs": "ten"}})
    assert "train.lr" in _err({**BASE, "train": {"lr": -1}})
    assert "data.split" in _err({**BASE, "data": {"split": [0.5, 0.1, 0.1]}})
    assert "experiments.0.conv_filters" in _err({"experiments": [{"conv_filters": [0]}]})


def test_empty_experiment_list():
    assert "experiments" in _err({"experiments": []})


def test_experiment_override_of_train_field():
    cfg = validate({"train": {"epochs": 3}, "experiments": [{"conv_filters": [8]}, {"conv_filters": [8], "epochs": 7}]})
    assert [e.train.epochs for e in cfg.resolved_experiments()] == [3, 7]
    assert "experiments.1.epochs" in _err({"experiments": [{"conv_filters": [8]}, {"conv_filters": [8], "epochs": 0}]})


def test_grid_is_a_cartesian_product():
    cfg = validate({"experiments": [{"name": "e", "conv_filters": [8]}],
                    "grid": {"lr": [0.1, 0.01], "stride": [1, 2]}})
    exps = cfg.resolved_experiments()
    assert len(exps) == 4
    assert {(e.train.lr, e.model.stride) for e in exps} == {(0.1, 1), (0.1, 2), (0.01, 1), (0.01, 2)}
    assert len({e.name for e in exps}) == 4
    assert "grid.lrr" in _err({**BASE, "grid": {"lrr": [1]}})


def test_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(BASE))
    cfg = load_config(path, ["train.lr=0.01", "data.root=/x", "experiments.0.fc_layers=[16, 8]"])
    assert cfg.train.lr == 0.01 and str(cfg.data.root) == "/x"
    assert cfg.resolved_experiments()[0].model.fc_layers == (16, 8)
    with pytest.raises(ConfigError, match="expected FIELD=VALUE"):
        load_config(path, ["train.lr"])
    with pytest.raises(ConfigError, match="experiments.5"):
        load_config(path, ["experiments.5.stride=2"])


def test_yaml_syntax_error_has_line_and_column(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\ntrain: {epochs: 3\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: YAML syntax error at line \d+, column \d+"):
        load_config(path)


def test_missing_file():
    with pytest.raises(ConfigError, match="no such config file"):
        load_config("/nonexistent/sweep.yaml")


def test_dump_roundtrips(tmp_path):
    cfg = load_config(REPO / "configs" / "demo.yaml")
    path = tmp_path / "again.yaml"
    path.write_text(dump_config(cfg))
    assert load_config(path) == cfg


def test_unsafe_yaml_is_refused(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("name: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="YAML"):
        load_config(path)


def test_run_name_cannot_escape_output_root():
    assert "name" in _err({**BASE, "name": "../../etc"})


def test_credentials_in_a_tracking_uri_are_refused_and_not_echoed():
    msg = _err({**BASE, "tracking": {"mlflow": {"tracking_uri": "http://alice:s3cret@127.0.0.1:5000"}}})
    assert "tracking.mlflow.tracking_uri: credentials do not belong in the URI" in msg
    assert "s3cret" not in msg and "alice" not in msg and "http://***@127.0.0.1:5000" in msg
