"""bench/table1.py end to end at tiny scale: the shipped study recipe's exp 1 for one epoch on the real
sample, through cnnc submit, its log and figure written as it goes, its lines against the study."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_table1_trains_through_cnnc_and_compares_with_the_study(sample_packed, tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "table1.py"), "--data", str(sample_packed),
                        "--only", "exp1", "--epochs", "1", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    lines = dict(line.split(": ", 1) for line in r.stdout.splitlines() if re.match(r"^[\w]+: ", line))
    acc = float(lines["exp1_test_acc"])
    assert 0 < acc < 100 and lines["exp1_best_epoch"] == "1 of 1"
    assert lines["exp1_minus_seed_points"].startswith(f"{acc - 41.66:+.2f}")  # the study's 41.66 %
    run = Path(lines["run"])
    log, figure = Path(lines["log"]), Path(lines["figure"])
    assert re.search(r"^\[\s*\d+s\] exp1: epoch 1/1 .* val [\d.]+%", log.read_text(), re.M)
    assert figure.stat().st_size > 5000 and (run / "trials.parquet").is_file()
    sys.path.insert(0, str(ROOT / "bench"))
    from table1 import curves_from_log  # what the figure is drawn from

    curves = curves_from_log(log)
    assert list(curves) == ["exp1"] and list(curves["exp1"]) == [1]
    assert curves["exp1"][1][1] == pytest.approx(float(lines["exp1_val_by_epoch"]), abs=0.05)
    assert (tmp_path / "sweep-improved-exp1-1ep.yaml").is_file()  # the sweep file as run, beside the results


def test_table1_refuses_an_unknown_experiment_and_a_bad_field_in_one_line(tmp_path):
    for args, says in ((["--only", "exp9"], "--only: exp9 not in"), (["--set", "train.lrr=1"], "train.lrr: unknown key")):
        r = subprocess.run([sys.executable, str(ROOT / "bench" / "table1.py"), "--data", str(tmp_path),
                            "--out", str(tmp_path / "out"), *args], capture_output=True, text=True, timeout=120)
        assert r.returncode != 0 and says in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert not list((tmp_path / "out").glob("*.yaml"))  # nothing left half-written
