"""mini-ImageNet layouts: each packs to the same arrays, split rules, idempotence, bad data."""

import hashlib
import json

import numpy as np
import pytest
from PIL import Image

from cnn_cluster.data import open_packed
from cnn_cluster.data.miniimagenet import detect, prepare
from cnn_cluster.errors import CnncError
from minifixtures import PER_CLASS, WNIDS, write_csv, write_evil_pickle, write_folders, write_parquet, write_pickle
from catalogue import documented


def _content(path):
    d = open_packed(path)
    out = {}
    for img, lab in zip(d.images, d.labels):
        out.setdefault(d.wnids[lab], []).append(hashlib.sha1(np.ascontiguousarray(img).tobytes()).hexdigest())
    return {k: sorted(v) for k, v in out.items()}


WRITERS = {
    "csv": write_csv,
    "folders": write_folders,
    "split-folders": lambda r: write_folders(r, ("train", "val", "test")),
    "pickle": write_pickle,
    "parquet": write_parquet,
}


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    out = {}
    for name, writer in WRITERS.items():
        base = tmp_path_factory.mktemp(name)
        src = writer(base / "src")
        out[name] = (src, prepare(src, base / "packed")[0])
    return out


def test_every_layout_packs_the_same_images(packed):
    reference = _content(packed["folders"][1])
    assert sorted(reference) == sorted(WNIDS) and all(len(v) == PER_CLASS for v in reference.values())
    for name, (_, path) in packed.items():
        assert _content(path) == reference, name
        d = open_packed(path)
        assert d.images.shape[1:] == (84, 84, 3)
        assert d.class_names[d.wnids.index("n01532829")] == "house finch"


@pytest.mark.parametrize("name,layout", [("csv", "csv"), ("folders", "folders"), ("split-folders", "folders"),
                                         ("pickle", "pickle"), ("parquet", "parquet")])
def test_layout_is_detected(packed, name, layout):
    assert detect(packed[name][0]) == layout
    assert open_packed(packed[name][1]).info["layout"] == layout


def test_split_rules(packed, tmp_path):
    fewshot = open_packed(packed["csv"][1])
    assert "disjoint classes" in fewshot.info["split_rule"]
    for c in range(len(WNIDS)):  # pooled: every class in every split, by the fractions
        counts = np.bincount(fewshot.split[fewshot.labels == c], minlength=3)
        assert counts.tolist() == [10, 1, 1]
    shared = open_packed(packed["split-folders"][1])
    assert shared.info["split_rule"].startswith("the source's own splits")
    assert shared.info["counts"] == {"train": 20, "val": 20, "test": 20}
    no_val = open_packed(prepare(write_csv(tmp_path / "s", fewshot=False), tmp_path / "p")[0])
    assert no_val.info["counts"] == {"train": 40, "val": 10, "test": 10}
    parquet = open_packed(packed["parquet"][1])  # train and test shards only: validation carved from train
    assert "val carved out of train" in parquet.info["split_rule"] and parquet.info["counts"]["val"] > 0
    assert no_val.info["split_rule"] == "the source's own splits (shared classes)"


def test_no_splits_means_pooled(packed):
    assert "no splits" in open_packed(packed["folders"][1]).info["split_rule"]


def test_idempotent_and_fingerprinted(tmp_path):
    src = write_folders(tmp_path / "src")
    path, reused = prepare(src, tmp_path / "out")
    stamp = (path / "dataset.json").stat().st_mtime_ns
    assert not reused
    path2, reused = prepare(src, tmp_path / "out")
    assert reused and (path2 / "dataset.json").stat().st_mtime_ns == stamp
    _, reused = prepare(src, tmp_path / "out", size=32)  # other options: prepared again
    assert not reused and open_packed(tmp_path / "out").image_size == 32
    (src / WNIDS[0] / "extra.jpg").write_bytes((src / WNIDS[0] / f"{WNIDS[0]}_0.JPEG").read_bytes())
    _, reused = prepare(src, tmp_path / "out", size=32)  # other files: prepared again
    assert not reused


def test_resize_and_colour_conversion(tmp_path):
    src = write_folders(tmp_path / "src", size=120)
    cls = src / WNIDS[0]
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((100, 130)) * 255).astype(np.uint8), "L").save(cls / "gray.png")
    Image.fromarray((rng.random((90, 90, 3)) * 255).astype(np.uint8)).convert("P").save(cls / "palette.png")
    Image.fromarray((rng.random((90, 90, 3)) * 255).astype(np.uint8)).convert("CMYK").save(cls / "cmyk.jpg")
    d = open_packed(prepare(src, tmp_path / "out")[0])
    assert d.images.shape == (len(WNIDS) * PER_CLASS + 3, 84, 84, 3)
    report = json.loads((d.root / "prepare-report.json").read_text())
    assert report["skipped_count"] == 0


def test_bad_data_is_skipped_and_listed(tmp_path):
    src = write_csv(tmp_path / "src")
    img = src / "images"
    first = sorted(img.iterdir())[0]
    first.write_bytes(first.read_bytes()[:200])  # truncated JPEG
    (img / "notes.txt").write_text("not an image")
    with open(src / "train.csv", "a") as f:
        f.write("missing.jpg,n01532829\n")
    d = open_packed(prepare(src, tmp_path / "out")[0])
    report = json.loads((d.root / "prepare-report.json").read_text())
    reasons = {r["reason"].split(" (")[0] for r in report["skipped"]}
    assert "undecodable image" in reasons and "names a missing file missing.jpg" in reasons
    assert len(d.labels) == len(WNIDS) * PER_CLASS - 1

    folders = write_folders(tmp_path / "f")
    (folders / "n09999999").mkdir()  # an empty class folder
    (folders / WNIDS[0] / "readme.md").write_text("x")  # a non-image file
    for p in sorted((folders / WNIDS[1]).iterdir())[2:]:  # a class with far fewer images
        p.unlink()
    d = open_packed(prepare(folders, tmp_path / "out2")[0])
    report = json.loads((d.root / "prepare-report.json").read_text())
    reasons = {r["reason"] for r in report["skipped"]}
    assert {"empty class folder", "not an image file"} <= reasons
    assert [s["class"] for s in report["small_classes"]] == [WNIDS[1]]
    assert d.num_classes == len(WNIDS)


def test_unknown_layout_and_missing_root(tmp_path):
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.txt").write_text("x")
    with pytest.raises(CnncError, match="matches no mini-ImageNet layout; looked for csv"):
        prepare(tmp_path / "junk", tmp_path / "out")
    with pytest.raises(CnncError, match="no such folder"):
        prepare(tmp_path / "nope", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_all_images_corrupt_writes_nothing(tmp_path):
    src = write_folders(tmp_path / "src")
    for p in src.rglob("*.JPEG"):
        p.write_bytes(b"garbage")
    with pytest.raises(CnncError, match="none of the"):
        prepare(src, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.tmp-*"))


def test_malicious_pickle_is_refused_never_run(tmp_path):
    marker = tmp_path / "pwned"
    src = write_evil_pickle(tmp_path / "src", marker)
    with pytest.raises(CnncError) as err:
        prepare(src, tmp_path / "out")
    pickles = sorted(src.glob("*.pkl"))
    assert any(str(err.value) == documented("malicious-pickle", FILE=str(p), GLOBAL=f"{name}.system")
               for p in pickles for name in ("posix", "os", "nt")), str(err.value)
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_cli_prepare_and_info(tmp_path):
    from typer.testing import CliRunner

    from cnn_cluster.cli import app

    runner = CliRunner()
    src = write_csv(tmp_path / "src")
    result = runner.invoke(app, ["data", "prepare", str(src), "--out", str(tmp_path / "p")])
    assert result.exit_code == 0, result.output
    assert "packed 60 of 60 images" in result.output and "decoding" in result.output
    assert "split rule:   pooled" in result.output and "min 12, max 12" in result.output
    again = runner.invoke(app, ["data", "prepare", str(src), "--out", str(tmp_path / "p")])
    assert "reused" in again.output
    info = runner.invoke(app, ["data", "info", str(tmp_path / "p")])
    assert info.exit_code == 0 and "layout:       csv" in info.output and "train 50, val 5, test 5" in info.output
    bad = runner.invoke(app, ["data", "prepare", str(tmp_path / "nope"), "--out", str(tmp_path / "q")])
    assert bad.exit_code == 2 and "no such folder" in bad.output and "Traceback" not in bad.output
    bad = runner.invoke(app, ["data", "info", str(tmp_path)])
    assert bad.exit_code == 2 and "not a packed dataset" in bad.output


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["csv", "folders", "pickle", "parquet"])
def test_sweep_yaml_trains_on_every_layout(ray_local, tmp_path, layout):
    from pathlib import Path

    import pyarrow.parquet as pq
    from typer.testing import CliRunner

    from cnn_cluster.cli import app

    src = WRITERS[layout](tmp_path / "src")
    sweep = Path(__file__).resolve().parent.parent / "configs" / "sweep.yaml"
    result = CliRunner().invoke(app, [
        "submit", str(sweep), "--no-dashboard", "--no-report",
        "--set", f"data.root={src}", "--set", f"output.root={tmp_path / 'runs'}",
        "--set", "experiments=[{name: exp1, conv_filters: [4], fc_layers: [8], epochs: 3}]",
        "--set", "train.batch_size=8", "--set", "resources.workers_per_trial=1",
        "--set", "occlusion.count=2", "--set", "occlusion.stride=8"])
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / "latest"
    trials = pq.read_table(run / "trials.parquet").to_pylist()
    assert trials[0]["status"] == "finished"
    if (run / "occlusion.parquet").exists():  # as many maps as it classified right, at most 2
        assert 1 <= len(pq.read_table(run / "occlusion.parquet")) <= 2
    else:
        assert "occlusion skipped: occlusion: the model classified no test image correctly" in result.output


def test_stats_gathered_while_decoding_match_a_recount(packed, tmp_path):
    from cnn_cluster.data.packed import channel_stats, stats_sample

    for name in ("csv", "parquet"):
        d = open_packed(packed[name][1])
        assert (list(d.mean), list(d.std)) == channel_stats(d.images, stats_sample(d.split))
    src = write_folders(tmp_path / "src")
    next(src.rglob("*.JPEG")).write_bytes(b"broken")  # a failure: split and stats worked out again
    d = open_packed(prepare(src, tmp_path / "out")[0])
    assert (list(d.mean), list(d.std)) == channel_stats(d.images, stats_sample(d.split))


def test_unreadable_class_folder_is_skipped_and_listed(tmp_path):
    """Root reads everything, so the child process drops the capabilities that let it."""
    import os
    import shutil
    import subprocess
    import sys

    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and util-linux's setpriv to make a folder unreadable to the test")
    src = write_folders(tmp_path / "src")
    (src / WNIDS[2]).chmod(0)
    code = ("import sys; from pathlib import Path; from cnn_cluster.data.miniimagenet import prepare; "
            "prepare(Path(sys.argv[1]), Path(sys.argv[2]))")
    try:
        done = subprocess.run(["setpriv", "--bounding-set=-dac_override,-dac_read_search", sys.executable, "-c",
                               code, str(src), str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    finally:
        (src / WNIDS[2]).chmod(0o755)
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "out" / "prepare-report.json").read_text())
    assert {"file": WNIDS[2], "reason": "unreadable folder"} in report["skipped"]
    assert open_packed(tmp_path / "out").num_classes == len(WNIDS) - 1
