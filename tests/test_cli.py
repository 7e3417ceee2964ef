"""The CLI through typer's CliRunner: errors are one line with exit code 2."""

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from cnn_cluster.cli import app
from cnn_cluster.run.paths import RunDir
from cnn_cluster.run.state import get_state
from tiny import tiny_config

runner = CliRunner()


def _write(tmp_path, cfg) -> str:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def test_help_lists_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for cmd in ("submit", "report", "validate"):
        assert cmd in result.output


@pytest.mark.parametrize("args,needle", [
    (["--set", "train.optimizer=adamw"], "train.optimizer: must be one of adam or sgd"),
    (["--set", "train.epoch=3"], "did you mean 'epochs'"),
    (["--set", "experiments.0.conv_filters=[8,8,8,8,8,8,8,8]"], "conv layer 7"),
    (["--set", "data.boxes=/nonexistent/boxes.csv"], "data.boxes: /nonexistent/boxes.csv does not exist"),
])
def test_validate_errors_are_one_line(tmp_path, args, needle):
    result = runner.invoke(app, ["validate", _write(tmp_path, tiny_config(tmp_path)), *args])
    assert result.exit_code == 2
    assert needle in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_submit_without_config_or_resume():
    result = runner.invoke(app, ["submit"])
    assert result.exit_code == 2 and "give a CONFIG" in result.output


def test_report_on_missing_folder(tmp_path):
    result = runner.invoke(app, ["report", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "no such run folder" in result.output


def test_debug_shows_traceback(tmp_path):
    result = runner.invoke(app, ["--debug", "report", str(tmp_path / "nope")])
    assert result.exit_code != 0 and result.exception is not None


@pytest.mark.slow
def test_submit_then_report(ray_local, tmp_path):
    path = _write(tmp_path, tiny_config(tmp_path))
    result = runner.invoke(app, ["submit", path, "--no-dashboard", "--no-report"])
    assert result.exit_code == 0, result.output
    assert "a: epoch 1/1" in result.output and "b: finished" in result.output
    run_dir = tmp_path / "runs" / "latest"
    assert (run_dir / "trials.parquet").is_file()
    result = runner.invoke(app, ["report", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert "Test Accuracy" in result.output and "report page:" in result.output
    rows = [line for line in result.output.splitlines() if line.startswith(("a ", "b "))]
    assert len(rows) == 2


@pytest.mark.slow
def test_occlude_command(ray_local, tmp_path):
    path = _write(tmp_path, tiny_config(tmp_path, experiments=[{"name": "a", "conv_filters": [4], "fc_layers": []}]))
    assert runner.invoke(app, ["submit", path, "--no-dashboard", "--no-report"]).exit_code == 0
    run_dir = str(tmp_path / "runs" / "latest")
    bad = runner.invoke(app, ["occlude", run_dir, "--window", "100"])
    assert bad.exit_code == 2 and "larger than" in bad.output and "Traceback" not in bad.output
    bad = runner.invoke(app, ["occlude", run_dir, "--trial", "zzz"])
    assert bad.exit_code == 2 and "finished: a" in bad.output
    bad = runner.invoke(app, ["occlude", run_dir, "--fill", "purple"])
    assert bad.exit_code == 2 and "--fill" in bad.output
    state = json.loads((Path(run_dir) / "run.json").read_text())  # as if killed during its occlusion stage
    dead = {**state["driver"], "created": state["driver"]["created"] - 3600}
    (Path(run_dir) / "run.json").write_text(json.dumps({**state, "state": "occlusion", "driver": dead}))
    assert get_state(RunDir(Path(run_dir)))["state"] == "interrupted"
    result = runner.invoke(app, ["occlude", run_dir, "--count", "2", "--stride", "4", "--select", "confident"])
    assert result.exit_code == 0, result.output
    assert get_state(RunDir(Path(run_dir)))["state"] == "finished"  # the maps complete the run
    assert "occlusion 2/2" in result.output and "Object or context" in result.output
    assert (tmp_path / "runs" / "latest" / "report" / "occlusion.png").is_file()
    assert (tmp_path / "runs" / "latest" / "report" / "occlusion-params.md").read_text().count("|") > 10


@pytest.mark.slow
def test_keep_checkpoints_false_keeps_no_weights(ray_local, tmp_path):
    """output.keep_checkpoints: false: the run ends with its tables, its maps and no weights."""
    cfg = tiny_config(tmp_path, experiments=[{"name": "a", "conv_filters": [4], "fc_layers": []}],
                      occlusion={"count": 1, "stride": 8}, output={"keep_checkpoints": False})
    result = runner.invoke(app, ["submit", _write(tmp_path, cfg), "--no-dashboard"])
    assert result.exit_code == 0, result.output
    run = RunDir((tmp_path / "runs" / "latest").resolve())
    assert run.trials.is_file() and run.predictions.is_file() and run.occlusion.is_file()  # the weights were used
    assert not list(run.root.rglob("*.pt")), "weights kept although keep_checkpoints is false"
    assert (run.report / "index.html").is_file()
    bad = runner.invoke(app, ["occlude", str(run.root)])  # later maps need weights: said in one line
    assert bad.exit_code == 2 and "no such checkpoint" in bad.output and "Traceback" not in bad.output


def test_jobs_entry_point_refuses_a_bad_config_in_one_line(tmp_path):
    """jobs/sweep.py in its own process (a real sweep through it: tests/test_cluster.py)."""
    import subprocess
    import sys
    from pathlib import Path

    path = _write(tmp_path, tiny_config(tmp_path))
    script = Path(__file__).resolve().parent.parent / "jobs" / "sweep.py"
    bad = subprocess.run([sys.executable, str(script), path, "--set", "train.lr=-1"], capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 2 and "train.lr" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "runs").exists()
