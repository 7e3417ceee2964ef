"""The real mini-ImageNet sample (../shared/data): loaders, data prepare/info, object boxes, and a
1-epoch sweep with Part B and the report page, on real photographs. Skipped where it is absent."""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from cnn_cluster.config import validate
from cnn_cluster.data import load_dataset, open_packed
from cnn_cluster.data.boxes import apply_boxes
from cnn_cluster.errors import CnncError

from catalogue import documented

CNNC = str(Path(sys.executable).with_name("cnnc"))
FINCH = "n01532829"  # house finch: the sample's first class


def test_prepare_and_info_on_the_real_sample(sample, tmp_path):
    r = subprocess.run([CNNC, "data", "prepare", str(sample), "--out", str(tmp_path / "packed")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "packed 10000 of 10000 images" in r.stdout
    assert "classes:      100  (images per class: min 100, max 100)" in r.stdout
    assert "class names:  house finch, robin, triceratops, green mamba, ..." in r.stdout
    data = open_packed(tmp_path / "packed")
    assert [len(data.indices(s)) for s in ("train", "val", "test")] == [8000, 1000, 1000]
    assert data.wnids[0] == FINCH and data.class_names[0] == "house finch"
    assert data.images.shape == (10000, 84, 84, 3) and 60 < data.images.mean() < 200  # photographs, not blank
    again = subprocess.run([CNNC, "data", "prepare", str(sample), "--out", str(tmp_path / "packed")],
                           capture_output=True, text=True, timeout=300)
    assert "already prepared" in again.stdout


def test_loading_the_sample_through_a_config_stratifies_it(sample, tmp_path, monkeypatch):
    cfg = validate({"data": {"source": "miniimagenet", "root": str(sample)}, "experiments": [{"conv_filters": [4]}]})
    monkeypatch.setenv("CNNC_CACHE", str(tmp_path))
    data = load_dataset(cfg.data)
    for split in ("train", "val", "test"):
        counts = np.bincount(data.labels[data.indices(split)], minlength=100)
        assert counts.min() == counts.max()  # every class in every split, equally
    assert data.sources[0].startswith(FINCH) and data.sources[0].endswith(".jpg")


def _boxes_csv(tmp_path: Path, data) -> tuple[Path, Path, list[int]]:
    """Boxes for three sample images in both formats: plain pixels, and ImageNet's LOC_*_solution."""
    picked = [0, 1, 150]
    plain = tmp_path / "boxes.csv"
    plain.write_text("filename,x0,y0,x1,y1\n" + "".join(
        f"{data.sources[i]},{10 + i % 5},20,60,80\n" for i in picked))
    loc = tmp_path / "LOC_train_solution.csv"
    rows = [f"{Path(data.sources[i]).stem},{data.wnids[data.labels[i]]} 10 20 40 50 "
            f"{data.wnids[data.labels[i]]} 30 10 70 60 n00000000 0 0 84 84" for i in picked]
    loc.write_text("ImageId,PredictionString\n" + "\n".join(rows) + "\n")
    return plain, loc, picked


def test_object_boxes_from_both_csv_formats_scale_with_the_image(sample_packed, tmp_path):
    data = open_packed(sample_packed)
    plain, loc, picked = _boxes_csv(tmp_path, data)
    boxed = apply_boxes(data, plain)
    assert [tuple(boxed.boxes[i]) for i in picked] == [(10, 20, 60, 80), (11, 20, 60, 80), (10, 20, 60, 80)]
    assert (boxed.boxes[[i for i in range(len(data.labels)) if i not in picked]] == -1).all()
    merged = apply_boxes(data, loc)  # the own class's two objects merged; another class's ignored
    assert all(tuple(merged.boxes[i]) == (10, 10, 70, 60) for i in picked)
    from cnn_cluster.data.miniimagenet import prepare

    half, _ = prepare(Path(data.info["source"]), tmp_path / "half", 42)
    halved = apply_boxes(open_packed(half), plain)
    assert tuple(halved.boxes[picked[0]]) == (5, 10, 30, 40)  # 84-pixel originals at 42


@pytest.mark.parametrize("text,match", [
    ("name,a,b\nx,1,2\n", "the header must be"),
    ("filename,x0,y0,x1,y1\nx.jpg,5,5,2,9\n", "line 2: cannot read"),
    ("filename,x0,y0,x1,y1\nnot-in-the-sample.jpg,1,1,9,9\n", "no row names an image of the dataset"),
])
def test_bad_boxes_files_are_named(sample_packed, tmp_path, text, match):
    bad = tmp_path / "bad.csv"
    bad.write_text(text)
    with pytest.raises(CnncError, match=match) as err:
        apply_boxes(open_packed(sample_packed), bad)
    if "cannot read" in match:
        assert str(err.value) == documented("bad-boxes", FILE=str(bad))
    missing = tmp_path / "missing.csv"
    with pytest.raises(CnncError) as err:
        apply_boxes(open_packed(sample_packed), missing)
    assert str(err.value) == documented("missing-boxes", FILE=str(missing))


@pytest.mark.slow
def test_one_epoch_sweep_with_occlusion_and_report_on_real_photographs(sample_packed, tmp_path):
    data = open_packed(sample_packed)
    plain, _, _ = _boxes_csv(tmp_path, data)
    test_idx = data.indices("test")  # every test image boxed: every map is scored
    plain.write_text("filename,x0,y0,x1,y1\n" + "".join(f"{data.sources[i]},20,20,64,64\n" for i in test_idx))
    cfg = {"name": "real", "data": {"source": "packed", "root": str(sample_packed), "boxes": str(plain)},
           "train": {"epochs": 1, "batch_size": 64},
           # the study's exp 3 architecture (its cheapest): the report sets the study's claim beside it
           "experiments": [{"name": "small", "conv_filters": [32, 64], "fc_layers": [128], "max_pool": False,
                            "stride": 2}],
           "resources": {"workers_per_trial": 1, "cpus_per_worker": 2},
           "output": {"root": str(tmp_path / "runs")},
           "occlusion": {"count": 3, "select": "confident", "misclassified": 1, "window": 8, "stride": 4}}
    path = tmp_path / "real.yaml"
    path.write_text(yaml.safe_dump(cfg))
    r = subprocess.run([CNNC, "submit", str(path), "--no-dashboard"], capture_output=True, text=True, timeout=900,
                       env={**os.environ, "CNNC_PROGRESS_S": "1"})  # an epoch of 8,000 photographs outlasts 1 s
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r"small: epoch 1/1 batch \d+/125 .* img/s  ETA trial", r.stdout), r.stdout
    run = (tmp_path / "runs" / "latest").resolve()
    names = set(data.class_names)
    occ_lines = [line for line in r.stdout.splitlines() if "occlusion " in line and " on " in line]
    assert occ_lines and all(any(n in line for n in names) for line in occ_lines)  # the class by name
    page = (run / "report" / "index.html").read_text()
    text = (run / "report" / "README.md").read_text()  # the page's words, without its inlined figures
    assert not re.findall(r"\bn\d{8}\b", text)  # class names, never wnids
    assert sum(n in text for n in names) >= 10
    for fig in ("occlusion.png", "misclassified.png", "confusion.png", "curves.png"):
        assert (run / "report" / fig).stat().st_size > 5000, fig
    import pyarrow.parquet as pq

    occ = pq.read_table(run / "occlusion.parquet").to_pylist()
    scored = [o for o in occ if o["box"] is not None]
    assert scored == occ and all(o["box"] == [20, 20, 64, 64] for o in occ)
    assert "Object or context: the largest confidence drop" in page
    assert "| Study (difference, points) |" in text  # mini-ImageNet: the study's column
    assert re.search(r"\| (\*\*)?below exp 2(\*\*)? \|", text)  # exp 3's claim; the best row is in bold
