"""Occlusion maps: by hand, dense vs fast vs Captum, invariances, the Ray stage, context bias."""

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from torch import nn

from cnn_cluster.config import DataConfig, Experiment, ModelConfig, OcclusionConfig, TrainConfig
from cnn_cluster.data import load_dataset
from cnn_cluster.models import build_model
from cnn_cluster.attribution.occlusion import box_scores, fill_values, grid_size, occlusion_map, select_images, supports_fast, to_captum


class HandModel(nn.Module):
    """logit0 = sum of channel 0 over a 4x4 patch at (6..10, 6..10); logit1 = 0.

    With fill 0 (the mean), a window that hides k pixels of a patch of ones
    leaves logit0 = 16 - k, so P(class 0) = sigmoid(16 - k): a map on paper.
    """

    def __init__(self):
        super().__init__()
        conv = nn.Conv2d(3, 1, 1)
        conv.weight.data.zero_()
        conv.weight.data[0, 0] = 1.0
        conv.bias.data.zero_()
        self.features = nn.Sequential(conv, nn.ReLU())
        fc = nn.Linear(16 * 16, 2)
        fc.weight.data.zero_()
        fc.bias.data.zero_()
        patch = torch.zeros(16, 16)
        patch[6:10, 6:10] = 1
        fc.weight.data[0] = patch.flatten()
        self.head = nn.Sequential(nn.Flatten(), fc)

    def forward(self, x):
        return self.head(self.features(x))


def _hand_expected(window: int, stride: int) -> np.ndarray:
    n = (16 - window) // stride + 1
    out = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            y, x = i * stride, j * stride
            k = max(0, min(y + window, 10) - max(y, 6)) * max(0, min(x + window, 10) - max(x, 6))
            out[i, j] = 1 / (1 + np.exp(-(16 - k)))
    return out


@pytest.mark.parametrize("method", ["dense", "fast"])
@pytest.mark.parametrize("window,stride", [(4, 2), (3, 1), (8, 4)])
def test_hand_weighted_model_matches_paper(method, window, stride):
    x = torch.zeros(1, 3, 16, 16)
    x[0, 0, 6:10, 6:10] = 1
    res = occlusion_map(HandModel(), x, [0], window=window, stride=stride, method=method)
    assert np.allclose(res.maps[0].numpy(), _hand_expected(window, stride), atol=1e-6)
    assert res.clean[0] == pytest.approx(1 / (1 + np.exp(-16)), abs=1e-6)


def _models():
    torch.manual_seed(0)
    a = build_model(ModelConfig(conv_filters=(8, 16), fc_layers=(32,)), 5, 40)
    b = build_model(Experiment(name="b", model=ModelConfig(conv_filters=(8, 8, 16), fc_layers=(16,), max_pool=False,
                                                           stride=2), train=TrainConfig(batch_norm=True)), 5, 40)
    for m in b.modules():  # non-trivial eval-mode statistics
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
    return {"pool": a.eval(), "stride2-bn": b.eval()}


MEAN, STD = (0.4, 0.5, 0.45), (0.25, 0.2, 0.3)


@pytest.mark.parametrize("name", ["pool", "stride2-bn"])
@pytest.mark.parametrize("window,stride,fill", [(8, 2, "mean"), (6, 2, "gray"), (5, 5, "zero"), (8, 4, "blur")])
def test_dense_fast_and_captum_agree(name, window, stride, fill):
    from captum.attr import Occlusion

    model = _models()[name]
    torch.manual_seed(1)
    x = torch.randn(2, 3, 40, 40)
    targets = [1, 3]
    kw = dict(window=window, stride=stride, fill=fill, mean=MEAN, std=STD)
    dense = occlusion_map(model, x, targets, method="dense", **kw)
    fast = occlusion_map(model, x, targets, method="fast", **kw)
    assert torch.allclose(dense.maps, fast.maps, atol=1e-5)
    assert (40 - window) % stride == 0  # Captum adds a cut-off edge window otherwise
    attr = Occlusion(lambda inp: torch.softmax(model(inp), 1)).attribute(
        x, sliding_window_shapes=(3, window, window), strides=(3, stride, stride),
        baselines=fill_values(x, fill, MEAN, STD, window), target=torch.tensor(targets), perturbations_per_eval=16)
    for i in range(2):
        for res in (dense, fast):
            mapped = to_captum(res.maps[i], float(res.clean[i]), window, stride, (40, 40))
            assert torch.allclose(attr[i, 0].double(), mapped, atol=1e-5)
            assert torch.allclose(attr[i, 1].double(), mapped, atol=1e-5)  # same window over all channels


@pytest.mark.parametrize("method", ["dense", "fast"])
def test_invariant_to_batch_size(method):
    model = _models()["pool"]
    torch.manual_seed(2)
    x = torch.randn(1, 3, 40, 40)
    maps = [occlusion_map(model, x, [2], method=method, batch=b).maps for b in (1, 7, 64, 1000)]
    for m in maps[1:]:
        assert torch.allclose(maps[0], m, atol=1e-5)


def test_map_shape_is_study_shape():
    model = build_model(ModelConfig(conv_filters=(4,), fc_layers=()), 3, 84).eval()
    res = occlusion_map(model, torch.zeros(1, 3, 84, 84), [0])
    assert res.maps.shape == (1, 39, 39)


@pytest.mark.parametrize("kw,match", [
    (dict(window=50), "larger than"), (dict(window=0), ">= 1"), (dict(stride=0), ">= 1"),
    (dict(fill="purple"), "fill must be one of"), (dict(stride=45, window=4), "stride"),
    (dict(method="sparse"), "auto, fast or dense"),
])
def test_bad_window_stride_fill(kw, match):
    model = build_model(ModelConfig(conv_filters=(4,), fc_layers=()), 3, 40).eval()
    with pytest.raises(ValueError, match=match):
        occlusion_map(model, torch.zeros(1, 3, 40, 40), [0], **kw)


def test_any_sequential_model_gets_a_map_and_the_default_picks_the_path():
    """A plain nn.Sequential takes the fast path up to its Flatten; a layer the fast path cannot tile
    sends the default to the dense path, while method='fast' names that layer."""
    torch.manual_seed(0)
    plain = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 4, 3),
                          nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 16), nn.ReLU(), nn.Linear(16, 3)).eval()
    x = torch.randn(2, 3, 20, 20)
    assert supports_fast(plain)
    dense = occlusion_map(plain, x, [0, 2], window=4, stride=2, method="dense").maps
    for method in ("auto", "fast"):
        assert torch.allclose(occlusion_map(plain, x, [0, 2], window=4, stride=2, method=method).maps, dense, atol=1e-5)
    odd = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(4 * 10 * 10, 3)).eval()
    assert not supports_fast(odd)
    auto = occlusion_map(odd, x, [1, 1], window=4, stride=2).maps
    assert torch.allclose(auto, occlusion_map(odd, x, [1, 1], window=4, stride=2, method="dense").maps)
    with pytest.raises(ValueError, match=r"cannot handle layer 1 \(AvgPool2d"):
        occlusion_map(odd, x, [0, 0], method="fast")
    assert grid_size(84, 8, 2) == 39


def test_box_scores_by_hand():
    pmap = np.ones((5, 5))
    pmap[1, 1] = 0.2  # the only drop, its window centre (1*2 + 1.5 = 3.5) inside the box
    s = box_scores(pmap, 1.0, (2, 2, 6, 6), window=4, stride=2)
    assert s["pointing"] and s["object_share"] == pytest.approx(1.0)
    assert s["box_share"] == pytest.approx(4 / 25)  # centres 3.5 and 5.5 on each axis
    pmap[1, 1], pmap[4, 4] = 1.0, 0.5
    assert not box_scores(pmap, 1.0, (2, 2, 6, 6), 4, 2)["pointing"]


def test_select_images():
    preds = [{"index": i, "true": i % 3, "pred": i % 3 if i < 12 else (i + 1) % 3, "p_true": i / 20,
              "p_pred": 0.5 + i / 40} for i in range(15)]
    rnd = select_images(preds, 5, "random", seed=1)
    assert len(rnd) == 5 and all(p["pred"] == p["true"] for p, _ in rnd)
    assert [p["index"] for p, _ in rnd] == [p["index"] for p, _ in select_images(preds, 5, "random", seed=1)]
    assert [p["index"] for p, _ in select_images(preds, 3, "confident")] == [11, 10, 9]
    per_class = select_images(preds, 3, "per_class")
    assert sorted(p["true"] for p, _ in per_class) == [0, 1, 2]
    with_errors = select_images(preds, 2, "confident", misclassified=2)
    assert [p["index"] for p, _ in with_errors] == [11, 10, 14, 13]  # errors: most confident first
    assert with_errors[-1][1] == [(13 % 3, "true"), (14 % 3, "predicted")]


# --------------------------------------------------------------------------- the Ray stage


@pytest.fixture(scope="module")
def tiny_data():
    return load_dataset(DataConfig(synthetic={"classes": 3, "images_per_class": 20}))


def _preds(model, data):
    from cnn_cluster.training.step import Arrays, predict

    arrays = Arrays(np.asarray(data.images), data.labels, data.split, data.mean, data.std, data.num_classes)
    idx = data.indices("test")
    probs = predict(model, arrays, idx, torch.device("cpu")).numpy()
    return [{"index": int(i), "true": int(data.labels[i]), "pred": int(p.argmax()), "p_true": float(p[data.labels[i]]),
             "p_pred": float(p.max())} for i, p in zip(idx, probs)]


@pytest.mark.slow
def test_ray_stage_rows_ordered_and_worker_count_invariant(ray_local, tiny_data):
    from cnn_cluster.attribution.actors import run_occlusion
    from cnn_cluster.run.schemas import OCCLUSION_SCHEMA
    from cnn_cluster.run.io import write_table

    torch.manual_seed(0)
    model = build_model(ModelConfig(conv_filters=(4, 8), fc_layers=(8,)), 3, 84).eval()
    preds = [dict(p, pred=p["true"]) for p in _preds(model, tiny_data)]  # treat all as correct: 6 images
    cfg = OcclusionConfig(count=4, window=12, stride=6, misclassified=0)
    one = run_occlusion(model, tiny_data, preds, cfg, "t", workers=1)
    two = run_occlusion(model, tiny_data, preds, cfg, "t", workers=2)
    assert [r["index"] for r in one] == [r["index"] for r in two] == sorted(r["index"] for r in one)
    for a, b in zip(one, two):
        assert np.allclose(a["map"], b["map"], atol=1e-6) and a["map_h"] == a["map_w"] == 13
    assert len({r["node"] for r in two}) == 2  # both workers did work
    from pathlib import Path
    import tempfile
    path = Path(tempfile.mkdtemp()) / "occlusion.parquet"
    write_table(path, two, OCCLUSION_SCHEMA)
    assert pq.read_schema(path).equals(OCCLUSION_SCHEMA)


def _train(data, epochs=4):
    from cnn_cluster.config import Experiment
    from cnn_cluster.training.step import Arrays, initial_model, epoch_batches, make_optimizer, train_epoch

    exp = Experiment.model_validate({"name": "m", "model": {"conv_filters": [8, 16], "fc_layers": [32]},
                                     "train": {"epochs": epochs, "batch_size": 16, "lr": 0.002}})
    arrays = Arrays(np.asarray(data.images), data.labels, data.split, data.mean, data.std, data.num_classes)
    model = initial_model(exp, arrays, torch.device("cpu"))
    opt = make_optimizer(model, exp.train)
    idx = data.indices("train")
    gen = torch.Generator().manual_seed(0)
    for ep in range(1, epochs + 1):
        batches = epoch_batches(idx, 16, 0, ep, 0, 1)
        train_epoch(model, opt, arrays, batches, exp.train, 0, 1, torch.device("cpu"), gen)
    return model.eval()


@pytest.mark.slow
def test_context_cue_moves_the_verdict_to_context():
    """A class-giving patch in the background: the model trained on it looks there."""
    base = {"classes": 4, "images_per_class": 120}
    cue_data = load_dataset(DataConfig(synthetic={**base, "context_cue": True}))
    plain_data = load_dataset(DataConfig(synthetic=base))
    torch.set_num_threads(2)
    cue_model, plain_model = _train(cue_data), _train(plain_data)

    def context_share(model):
        preds = [p for p in _preds(model, cue_data) if p["pred"] == p["true"]][:16]
        assert len(preds) >= 8, "the model must classify enough cue images correctly"
        x = torch.from_numpy(np.asarray(cue_data.images[[p["index"] for p in preds]])).permute(0, 3, 1, 2) / 255.0
        x = (x - torch.tensor(cue_data.mean).view(1, 3, 1, 1)) / torch.tensor(cue_data.std).view(1, 3, 1, 1)
        res = occlusion_map(model, x.float(), [p["true"] for p in preds])
        hits = [box_scores(m.numpy(), float(c), cue_data.boxes[p["index"]], 8, 2)["pointing"]
                for m, c, p in zip(res.maps, res.clean, preds)]
        return 1 - sum(hits) / len(hits)

    with_cue, without = context_share(cue_model), context_share(plain_model)
    assert with_cue > without + 0.3, (with_cue, without)
