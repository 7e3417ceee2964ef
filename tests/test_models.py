import pytest
import torch

from cnn_cluster.config import Experiment, ModelConfig, TrainConfig
from cnn_cluster.errors import ConfigError
from cnn_cluster.models import build_model, shapes

STUDY = {
    "exp1": ModelConfig(conv_filters=(32, 64), fc_layers=(128,), max_pool=True, stride=1),
    "exp2": ModelConfig(conv_filters=(32, 64, 128), fc_layers=(256, 128), max_pool=True, stride=1),
    "exp3": ModelConfig(conv_filters=(32, 64), fc_layers=(128,), max_pool=False, stride=2),
}


@pytest.mark.parametrize("name,flat", [("exp1", 21 * 21 * 64), ("exp2", 10 * 10 * 128), ("exp3", 21 * 21 * 64)])
def test_study_shapes_and_counts(name, flat):
    cfg = STUDY[name]
    s = shapes(cfg, 84, 100)
    assert s.flat == flat
    model = build_model(cfg, 100, 84)
    assert s.params == sum(p.numel() for p in model.parameters())
    x = torch.randn(2, 3, 84, 84)
    assert model(x).shape == (2, 100)
    assert model.features(x).flatten(1).shape[1] == flat


def test_flops_by_hand():
    # conv 3->4, k3, 8x8 out: 2*3*4*9*64 = 13,824; pool -> 4x4x4 = 64; fc 64->5: 2*64*5 = 640
    s = shapes(ModelConfig(conv_filters=(4,), fc_layers=()), 8, 5)
    assert s.flops == 13_824 + 640
    assert s.params == 3 * 4 * 9 + 4 + 64 * 5 + 5


def test_batch_norm_and_dropout_layers():
    exp = Experiment(name="exp1", model=STUDY["exp1"], train=TrainConfig(batch_norm=True, dropout=0.5))
    model = build_model(exp, 10, 84)
    kinds = [type(m).__name__ for m in model.modules()]
    assert kinds.count("BatchNorm2d") == 2 and "Dropout" in kinds
    assert shapes(STUDY["exp1"], 84, 10, True).params == sum(p.numel() for p in model.parameters())


def test_too_deep_is_rejected_naming_the_layer():
    cfg = ModelConfig(conv_filters=(8,) * 8, max_pool=True)
    with pytest.raises(ConfigError, match="conv layer 7"):
        shapes(cfg, 84, 10)


def test_the_package_imports_torch_only_for_a_model():
    """``cnnc --help``, ``report`` and config checks start without torch's ~2 s import."""
    import subprocess
    import sys

    code = ("import sys, cnn_cluster; before = 'torch' in sys.modules; cnn_cluster.CNN; "
            "print(before, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "True"]
