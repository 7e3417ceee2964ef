"""Part B's methods and their checks, in pure torch: deletion/insertion on a hand-weighted model,
maps of a model trained on the built-in shapes against its known boxes, and the randomisation check."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from cnn_cluster.attribution import faithfulness as faith
from cnn_cluster.attribution.analyse import Settings, analyse
from cnn_cluster.attribution.methods import METHODS, grad_cam_layer, gradient_maps
from cnn_cluster.attribution.sanity import cascade, learned_layers, rank_correlation
from cnn_cluster.attribution.verdict import pixel_box_scores, row_scores
from cnn_cluster.config import DataConfig, ModelConfig
from cnn_cluster.data import load_dataset
from cnn_cluster.models import build_model


class RegionModel(nn.Module):
    """Reads one region: logit 0 is W times the mean of channel 0 over rows/cols 0-1, logit 1 is 0."""

    W = 4.0

    def forward(self, x):
        s = self.W * x[:, 0, 0:2, 0:2].mean((1, 2))
        return torch.stack([s, torch.zeros_like(s)], 1)


def _sig(v: float) -> float:
    return 1 / (1 + math.exp(-v))


def test_deletion_and_insertion_aucs_by_hand():
    model, x = RegionModel(), torch.ones(3, 4, 4)
    fill = start = torch.zeros(3, 4, 4)
    region = torch.zeros(4, 4)
    region[:2, :2] = 1
    first = faith.curves(model, x, 0, faith.rank_of(region), fill, start, steps=4)  # the region first
    last = faith.curves(model, x, 0, faith.rank_of(-region), fill, start, steps=4)  # the region last
    rand = faith.curves(model, x, 0, faith.random_rank(4, 4, 0), fill, start, steps=4)
    hi, mid = _sig(RegionModel.W), 0.5  # the region present / gone (its mean is 1 / 0)
    # 4 pixels a step: deleting the region first leaves 0.5 from step 1 on; last keeps hi to step 3
    assert np.allclose(first.deletion, [hi, mid, mid, mid, mid], atol=1e-6)
    assert np.allclose(last.deletion, [hi, hi, hi, hi, mid], atol=1e-6)
    assert first.deletion_auc == pytest.approx(((hi + mid) / 2 + 3 * mid) / 4, abs=1e-6)
    assert last.deletion_auc == pytest.approx((3 * hi + (hi + mid) / 2) / 4, abs=1e-6)
    assert first.insertion_auc == pytest.approx(((mid + hi) / 2 + 3 * hi) / 4, abs=1e-6)
    assert first.deletion_auc < rand.deletion_auc <= last.deletion_auc
    assert first.insertion_auc >= rand.insertion_auc > last.insertion_auc
    # a partial region: the mean over the region is what the model reads, so the curve is graded
    half = faith.curves(model, x, 0, faith.rank_of(region), fill, start, steps=8)
    assert half.deletion[1] == pytest.approx(_sig(RegionModel.W / 2), abs=1e-6)


def test_rankings():
    assert faith.rank_of(torch.tensor([[0.1, 0.9], [0.5, 0.9]])).tolist() == [3, 0, 2, 1]  # ties: reading order
    centre = faith.centre_rank(5, 5).view(5, 5)
    assert centre[2, 2] == 0 and centre[0, 0] > 20
    assert sorted(faith.random_rank(3, 3, 1).tolist()) == list(range(9))
    assert faith.auc(np.array([1.0, 0.0])) == 0.5


def test_pixel_box_scores_by_hand():
    m = np.zeros((10, 10))
    m[2:4, 2:4] = 1.0  # all positive attribution in the box
    m[8, 8] = -5  # negative evidence does not count as energy
    s = pixel_box_scores(m, (1, 1, 5, 5))
    assert s == {"object_share": 1.0, "box_share": 0.16, "pointing": True}
    assert pixel_box_scores(m, (5, 5, 10, 10))["pointing"] is False


def test_gradient_methods_shapes_and_layer_choice():
    torch.manual_seed(0)
    model = build_model(ModelConfig(conv_filters=(4, 8), fc_layers=(8,)), 3, 32).eval()
    x = torch.randn(2, 3, 32, 32)
    for m in METHODS[1:]:
        maps = gradient_maps(model, x, [0, 1], m, ig_steps=4)
        assert maps.shape == (2, 32, 32) and torch.isfinite(maps).all(), m
    assert grad_cam_layer(model, None) == "features.3"  # conv, relu, pool, conv: the last conv
    with pytest.raises(ValueError, match=r"no conv layer 'features.9' \(conv layers: features.0, features.3\)"):
        grad_cam_layer(model, "features.9")
    # the study's CNN uses in-place ReLUs: the maps come from a copy, the model is left as it was
    assert all(m.inplace for m in model.modules() if isinstance(m, nn.ReLU))


# --------------------------------------------------------------------------- a trained model


@pytest.fixture(scope="module")
def shapes():
    """The built-in shapes (known boxes) and a small CNN trained on them for a few epochs."""
    from test_occlusion import _preds, _train

    torch.set_num_threads(2)
    data = load_dataset(DataConfig(synthetic={"classes": 4, "images_per_class": 120}))
    model = _train(data, epochs=6)  # at 4 epochs (p ~0.4) Grad-CAM reads noise; measured: 6 finds the shapes
    right = [p for p in _preds(model, data) if p["pred"] == p["true"]][:8]
    assert len(right) >= 6, "the model must classify enough shapes correctly"
    x = torch.from_numpy(np.asarray(data.images[[p["index"] for p in right]])).permute(0, 3, 1, 2) / 255.0
    x = ((x - torch.tensor(data.mean).view(1, 3, 1, 1)) / torch.tensor(data.std).view(1, 3, 1, 1)).float()
    return data, model, right, x


@pytest.mark.slow
def test_trained_maps_beat_random_and_find_the_shapes(shapes):
    data, model, right, x = shapes
    s = Settings(methods=("occlusion", "grad_cam"), mean=data.mean, std=data.std, steps=16)
    aucs = {m: [] for m in (*s.methods, "random")}
    on_object = {m: 0 for m in s.methods}
    for i, p in enumerate(right):
        res = analyse(model, x[i:i + 1], p["true"], s, seed=i)
        for m in aucs:
            aucs[m].append((res.curves[m].deletion_auc, res.curves[m].insertion_auc))
        for m in s.methods:
            row = {"method": m, "map": res.shown[m].ravel(), "map_h": res.shown[m].shape[0],
                   "map_w": res.shown[m].shape[1], "clean_prob": res.clean, "window": 8, "stride": 2}
            scores = row_scores(row, data.boxes[p["index"]])
            on_object[m] += scores["object_share"] > scores["box_share"]  # the image's verdict: object
    deletion, insertion = ({m: np.mean([a[k] for a in v]) for m, v in aucs.items()} for k in (0, 1))
    for m in s.methods:  # faithful: the class goes faster than under a random ranking, and comes back faster
        assert deletion[m] < deletion["random"] and insertion[m] > insertion["random"], (m, deletion, insertion)
        assert on_object[m] > len(right) / 2, (m, on_object)  # the verdict agrees with the known boxes


@pytest.mark.slow
def test_randomised_model_maps_do_not_correlate(shapes):
    data, model, right, x = shapes
    s = Settings(methods=("occlusion", "saliency"), mean=data.mean, std=data.std, steps=0)
    res = analyse(model, x[0:1], right[0]["true"], s, sanity=True)
    layers = learned_layers(model)
    assert layers[0] == "head.3" and layers[-1] == "features.0"  # logits first
    for m in s.methods:  # one entry per method and layer, in the cascade's order
        assert [layer for layer, _ in res.sanity[m]] == layers
    assert abs(res.sanity["occlusion"][-1][1]) < 0.3, res.sanity["occlusion"]  # every layer random: unrelated
    # the cascade is cumulative and leaves the trained model untouched
    before = [p.clone() for p in model.parameters()]
    *_, (name, rand) = cascade(model)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert all(not torch.equal(a, b) for a, b in zip(before, rand.parameters()))
    assert rank_correlation(torch.arange(9.0), torch.arange(9.0)) == pytest.approx(1.0)
    assert rank_correlation(torch.ones(9), torch.arange(9.0)) == 0.0  # a constant map ranks nothing


@pytest.mark.parametrize("case, occlusion", [
    ("unknown-method", {"methods": ["occlusion", "lime"]}),
    ("grad-cam-layer", {"methods": ["grad_cam"], "grad_cam_layer": "head.1"}),
    ("no-method", {"methods": []}),
])
def test_bad_methods_in_a_sweep_file_are_named(tmp_path, case, occlusion):
    import subprocess
    import sys
    from pathlib import Path

    from catalogue import documented
    from tiny import tiny_config, write_config

    path = write_config(tmp_path / "sweep.yaml", tiny_config(tmp_path, occlusion=occlusion))
    message = {"unknown-method": documented("unknown-method", FILE=str(path)),
               "grad-cam-layer": documented("grad-cam-layer", FILE=str(path)),
               "no-method": f"{path}: occlusion.methods: name at least one method"}[case]
    r = subprocess.run([str(Path(sys.executable).with_name("cnnc")), "validate", str(path)], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.strip() == f"error: {message}", r.stderr
