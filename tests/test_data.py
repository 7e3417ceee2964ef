import numpy as np

from cnn_cluster.config import DataConfig
from cnn_cluster.data import load_dataset, open_packed
from cnn_cluster.data.packed import stratified_split, write_packed
from cnn_cluster.data.synthetic import generate, render


def test_render_is_deterministic_and_boxes_fit():
    for i in range(40):
        a, box_a = render(i, i % 10, seed=3)
        b, box_b = render(i, i % 10, seed=3)
        assert np.array_equal(a, b) and box_a == box_b
        x0, y0, x1, y1 = box_a
        assert 0 <= x0 < x1 <= 84 and 0 <= y0 < y1 <= 84
    assert not np.array_equal(render(0, 0, seed=3)[0], render(0, 0, seed=4)[0])


def test_generated_set_is_deterministic(tmp_path):
    cfg = DataConfig(synthetic={"classes": 3, "images_per_class": 10})
    a = open_packed(generate(cfg, tmp_path / "a", processes=1))
    b = open_packed(generate(cfg, tmp_path / "b", processes=2))
    assert np.array_equal(a.images, b.images) and np.array_equal(a.boxes, b.boxes)
    assert a.images.shape == (30, 84, 84, 3) and a.images.dtype == np.uint8
    assert sorted(a.info["counts"].values()) == [3, 3, 24]
    assert a.class_names == ["disk", "square", "triangle"]
    assert ((a.boxes[:, 2] <= 84) & (a.boxes[:, 0] >= 0) & (a.boxes[:, 0] < a.boxes[:, 2])).all()
    train = a.images[a.indices("train")] / 255.0
    assert np.allclose(a.mean, train.mean(axis=(0, 1, 2)), atol=1e-4)


def test_load_dataset_caches(tmp_path):
    cfg = DataConfig(root=tmp_path, synthetic={"classes": 2, "images_per_class": 6})
    first = load_dataset(cfg)
    mtime = (first.root / "images.npy").stat().st_mtime_ns
    second = load_dataset(cfg)
    assert second.root == first.root and (second.root / "images.npy").stat().st_mtime_ns == mtime


def test_stratified_split_is_per_class_and_seeded():
    labels = np.repeat(np.arange(5), 50)
    split = stratified_split(labels, (0.8, 0.1, 0.1), seed=1)
    for c in range(5):
        counts = np.bincount(split[labels == c], minlength=3)
        assert counts.tolist() == [40, 5, 5]
    assert np.array_equal(split, stratified_split(labels, (0.8, 0.1, 0.1), seed=1))
    assert not np.array_equal(split, stratified_split(labels, (0.8, 0.1, 0.1), seed=2))


def test_partial_write_leaves_nothing(tmp_path):
    images = np.zeros((4, 8, 8, 3), np.uint8)
    labels = np.array([0, 0, 1, 1])
    try:
        write_packed(tmp_path / "out", images, labels, np.array([0, 0, 0, 9]), ["a", "b"])
    except IndexError:
        pass
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.iterdir())
