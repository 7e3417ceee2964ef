"""Part B's methods on the real mini-ImageNet sample (skipped where ../shared/data is absent): every
method's rows, the page's box drawing in headless Chromium, the verdict from the boxes drawn there,
and bad input refused before anything is written."""

import csv
import io
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote

import pyarrow.parquet as pq
import pytest
import yaml

from browser import chrome

CNNC = str(Path(sys.executable).with_name("cnnc"))
METHODS = ["occlusion", "grad_cam", "integrated_gradients", "saliency"]


def _cnnc(*args, timeout=600):
    return subprocess.run([CNNC, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "CNNC_PROGRESS_S": "5"})


@pytest.fixture(scope="module")
def run(sample_packed, tmp_path_factory):
    """A 1-epoch run on the real photographs, without boxes, with every method and the checks."""
    tmp = tmp_path_factory.mktemp("attribution-real")
    cfg = {"name": "real-methods", "data": {"source": "packed", "root": str(sample_packed)},
           "train": {"epochs": 1, "batch_size": 64, "lr": 0.003, "warmup_epochs": 1},
           "experiments": [{"name": "small", "conv_filters": [8, 16], "fc_layers": [32]}],
           "resources": {"workers_per_trial": 1, "cpus_per_worker": 2},
           "output": {"root": str(tmp / "runs")},
           "occlusion": {"count": 3, "select": "confident", "window": 8, "stride": 4, "methods": METHODS,
                         "ig_steps": 8, "faithfulness_steps": 8, "sanity_images": 1}}
    path = tmp / "real.yaml"
    path.write_text(yaml.safe_dump(cfg))
    r = _cnnc("submit", str(path), "--no-dashboard")
    assert r.returncode == 0, r.stdout + r.stderr
    return (tmp / "runs" / "latest").resolve()


@pytest.mark.slow
def test_every_method_has_its_maps_curves_and_check(run):
    rows = pq.read_table(run / "occlusion.parquet").to_pylist()
    images = {r["index"] for r in rows}
    assert len(images) == 3 and len(rows) == 3 * len(METHODS)
    for r in rows:
        assert len(r["deletion"]) == len(r["insertion"]) == 9 and 0 <= r["deletion_auc"] <= 1
        assert (r["map_h"], r["map_w"]) == ((20, 20) if r["method"] == "occlusion" else (84, 84))
        assert r["box"] is None and r["pointing"] is None  # real photographs: no boxes yet
    checked = [r for r in rows if r["sanity_layers"]]
    assert len(checked) == len(METHODS)  # one image, every method
    assert checked[0]["sanity_layers"] == ["head.3", "head.1", "features.3", "features.0"]
    page = (run / "report" / "index.html").read_text()
    for text in ("Attribution methods compared", "Deletion AUC", "centre-first ranking", "Randomisation check",
                 "cnnc-boxes", "Draw the objects"):
        assert text in page, text
    assert (run / "report" / "methods.png").stat().st_size > 20_000


@pytest.mark.slow
def test_boxes_drawn_on_the_page_give_the_verdict(run, chromium, tmp_path):
    from selenium.webdriver import ActionChains
    from selenium.webdriver.common.by import By

    driver = chrome(chromium, tmp_path / "profile")
    try:
        driver.get((run / "report" / "index.html").as_uri())
        canvases = driver.find_elements(By.CSS_SELECTOR, "#cnnc-boxes canvas")
        assert len(canvases) == 3
        for canvas in canvases[:2]:  # a box on two of the three photographs
            driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", canvas)
            ActionChains(driver).move_to_element_with_offset(canvas, -60, -60).click_and_hold() \
                .move_by_offset(60, 60).move_by_offset(60, 45).release().perform()
        files = [c.get_attribute("data-file") for c in canvases[:2]]
        width = driver.execute_script("return arguments[0].clientWidth", canvases[0])
        href = driver.find_element(By.ID, "cnnc-boxes-csv").get_attribute("href")
        count = driver.find_element(By.ID, "cnnc-boxes-count").text
    finally:
        driver.quit()
    assert width == 252 and count == "2 of 3 boxed"
    text = unquote(href.split(",", 1)[1])
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["filename"] for r in rows] == files  # the images the boxes were drawn on, by their dataset names
    for r in rows:  # canvas (66, 66)-(186, 171) at 3x: image pixels (22, 22)-(62, 57), within a pixel
        box = [int(r[k]) for k in ("x0", "y0", "x1", "y1")]
        assert all(abs(a - b) <= 1 for a, b in zip(box, [22, 22, 62, 57])), box
    boxes = tmp_path / "boxes.csv"
    boxes.write_text(text)
    before = {r["index"]: r["map"] for r in pq.read_table(run / "occlusion.parquet").to_pylist()}
    r = _cnnc("occlude", str(run), "--boxes", str(boxes))
    assert r.returncode == 0, r.stdout + r.stderr
    after = pq.read_table(run / "occlusion.parquet").to_pylist()
    assert {x["index"]: x["map"] for x in after} == before  # the maps were not computed again
    scored = [x for x in after if x["box"] is not None]
    assert len(scored) == 2 * len(METHODS) and all(x["pointing"] is not None for x in scored)
    drawn = {tuple(int(v[k]) for k in ("x0", "y0", "x1", "y1")) for v in rows}
    assert {tuple(x["box"]) for x in scored} == drawn  # the boxes drawn, in the 84-pixel images' pixels
    page = (run / "report" / "index.html").read_text()
    assert "Object or context" in page and "Images: more on the object than chance" in page
    assert "Draw the objects" not in page  # boxed: the verdict replaces the drawing block


@pytest.mark.slow
@pytest.mark.parametrize("case, args", [
    ("unknown-method", ["--methods", "occlusion,lime"]),
    ("grad-cam-layer", ["--methods", "grad_cam", "--grad-cam-layer", "features.9"]),
    ("boxes-not-analysed", ["--boxes", "BOXES"]),
])
def test_bad_input_is_refused_before_anything_is_written(run, tmp_path, case, args):
    from catalogue import documented

    boxes = tmp_path / "boxes.csv"
    boxes.write_text("filename,x0,y0,x1,y1\nn09999999_1.jpg,1,1,20,20\n")
    args = [str(boxes) if a == "BOXES" else a for a in args]
    message = {"unknown-method": "--methods: Input should be 'occlusion', 'saliency', 'integrated_gradients' or "
                                 "'grad_cam' (got 'lime')",
               "grad-cam-layer": "occlusion.grad_cam_layer: the model has no conv layer 'features.9' (conv layers: "
                                 "features.0, features.3)",
               "boxes-not-analysed": documented("boxes-not-analysed", FILE=str(boxes))}[case]
    table = (run / "occlusion.parquet").read_bytes()
    r = _cnnc("occlude", str(run), *args)
    assert r.returncode == 2 and r.stderr.strip() == f"error: {message}", r.stdout + r.stderr
    assert (run / "occlusion.parquet").read_bytes() == table and not (run / "occlusion.parts").exists()
