"""The report page: sections, Markdown twin, comparison, and a real headless-Chromium check."""

import json

import pytest
from typer.testing import CliRunner

from browser import chrome
from cnn_cluster.cli import app
from cnn_cluster.report.sections import confused_pairs, observations
from cnn_cluster.report.build import build_report
from cnn_cluster.run.paths import RunDir
from tiny import tiny_config


@pytest.fixture(scope="module")
def run(ray_local, tmp_path_factory):
    import yaml

    tmp = tmp_path_factory.mktemp("page")
    cfg = tiny_config(tmp, train={"epochs": 2}, occlusion={"count": 2, "stride": 8})
    path = tmp / "sweep.yaml"
    path.write_text(yaml.safe_dump(cfg))
    result = CliRunner().invoke(app, ["submit", str(path), "--no-dashboard"])
    assert result.exit_code == 0, result.output
    assert "report page:" in result.output
    return RunDir((tmp / "runs" / "latest").resolve())


def test_page_sections_and_markdown(run):
    rep = build_report(run)
    text = rep.page.read_text()
    order = ["What was run", "Experiments", "Accuracy against size and compute", "Training curves",
             "The confusion that matters", "Per-class accuracy", "Misclassified test images",
             "Occlusion sensitivity", "Observations"]
    positions = [text.index(f"<h2>{s}</h2>") for s in order]
    assert positions == sorted(positions)
    assert "http://" not in text and "https://" not in text  # self-contained
    assert "tiny: 2 experiments; defaults adam lr 0.001, batch 16, 2 epochs" in text  # the config summary
    readme = (run.report / "README.md").read_text()
    for line in readme.splitlines():
        if line.startswith("!["):
            assert (run.report / line.split("](")[1].rstrip(")")).is_file()
    assert "## Observations" in readme


@pytest.mark.slow
def test_page_in_a_real_browser(run, chromium, tmp_path):
    build_report(run)
    driver = chrome(chromium, tmp_path / "profile", log_network=True)
    try:
        driver.get((run.report / "index.html").as_uri())
        images = driver.execute_script("return [...document.images].map(i => i.complete && i.naturalWidth > 0)")
        rows = driver.execute_script("return document.querySelectorAll('#experiments tbody tr').length")
        driver.save_screenshot(str(tmp_path / "report.png"))
        events = [json.loads(e["message"])["message"] for e in driver.get_log("performance")]
    finally:
        driver.quit()
    assert len(images) >= 5 and all(images), images  # no broken image
    assert rows == 2  # one row per trial
    urls = [e["params"]["request"]["url"] for e in events if e["method"] == "Network.requestWillBeSent"]
    assert any(u.startswith("file:") and u.endswith("index.html") for u in urls), urls
    network = [u for u in urls if u.split(":", 1)[0] in ("http", "https", "ws", "wss", "ftp")]
    assert network == []  # the page makes no network request (chrome:// pages are the browser's own)
    assert (tmp_path / "report.png").stat().st_size > 10_000


@pytest.mark.slow
def test_compare_two_runs(run, tmp_path):
    result = CliRunner().invoke(app, ["report", str(run.root), str(run.root), "--out", str(tmp_path / "cmp")])
    assert result.exit_code == 0, result.output
    page = (tmp_path / "cmp" / "index.html").read_text()
    assert "The same experiments across runs" in page and page.count("<tr") >= 4
    assert "+0.0" in page  # the same run twice: no change


def test_observations_are_computed():
    base = {"conv_filters": [32, 64], "conv_layers": 2, "fc_layers": [128], "max_pool": True, "stride": 1,
            "kernel_size": 3, "lr": 1e-3, "optimizer": "adam", "batch_norm": False, "augmentation": "none",
            "scheduler": "none", "dropout": 0.0, "weight_decay": 0.0, "epochs": 10, "batch_size": 128}
    trials = [
        {**base, "trial": "exp1", "test_acc": 0.4166, "val_acc": 0.42, "params": 3.6e6, "flops": 84e6,
         "images_per_s": 200},
        {**base, "trial": "exp2", "conv_filters": [32, 64, 128], "conv_layers": 3, "fc_layers": [256, 128],
         "test_acc": 0.432, "val_acc": 0.44, "params": 3.4e6, "flops": 149e6, "images_per_s": 150},
        {**base, "trial": "exp3", "max_pool": False, "stride": 2, "test_acc": 0.401, "val_acc": 0.40,
         "params": 3.6e6, "flops": 27e6, "images_per_s": 1300},
    ]
    epochs = [{"trial": "exp2", "epoch": 15, "train_acc": 0.9, "val_acc": 0.44}]
    text = " ".join(observations(trials, epochs, "exp2"))
    assert "A deeper model (3 conv layers instead of 2) (exp2 against exp1) gained 1.5 points" in text
    assert "Stride-2 downsampling instead of max pooling (exp3 against exp1) lost 1.6 points" in text
    assert "46 points above its validation accuracy" in text
    assert "exp3 trained 8.7x faster than exp2" in text


def test_confused_pairs_count_both_directions():
    preds = [{"true": 0, "pred": 1}] * 3 + [{"true": 1, "pred": 0}] * 2 + [{"true": 2, "pred": 0}] + \
            [{"true": 2, "pred": 2}] * 5
    assert confused_pairs(preds) == [((0, 1), (3, 2)), ((0, 2), (0, 1))]
