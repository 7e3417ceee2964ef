"""train.precision: auto picks bf16 only where the hardware computes it; bf16 keeps fp32 weights,
optimizer state and loss; occlusion stays fp32 unless asked."""

from pathlib import Path

import numpy as np
import torch

from cnn_cluster.config import Experiment, ModelConfig, TrainConfig
from cnn_cluster.attribution.occlusion import occlusion_map
from cnn_cluster.training.step import Arrays, initial_model, epoch_batches, make_optimizer, native_bf16, resolve_precision, train_epoch

CPU = torch.device("cpu")


def test_auto_follows_the_cpu_flags():
    flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")).split()
    expected = "bf16" if {"avx512_bf16", "amx_bf16"} & set(flags) else "fp32"
    assert resolve_precision("auto", CPU) == expected and native_bf16(CPU) == (expected == "bf16")
    assert resolve_precision("fp32", CPU) == "fp32" and resolve_precision("bf16", CPU) == "bf16"


def _train(precision: str) -> tuple[torch.nn.Module, torch.optim.Optimizer, float]:
    rng = np.random.default_rng(0)
    arrays = Arrays(rng.integers(0, 256, (64, 24, 24, 3), dtype=np.uint8), rng.integers(0, 4, 64),
                    np.zeros(64, np.uint8), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), 4)
    cfg = TrainConfig(batch_size=16, precision=precision)
    exp = Experiment(name="x", model=ModelConfig(conv_filters=(8,), fc_layers=(16,)), train=cfg)
    model = initial_model(exp, arrays, CPU)
    opt = make_optimizer(model, cfg)
    loss, _, seen = train_epoch(model, opt, arrays, epoch_batches(np.arange(64), 16, 0, 1, 0, 1), cfg, 0, 4, CPU,
                                torch.Generator().manual_seed(0))
    return model, opt, loss / seen


def test_bf16_training_keeps_fp32_weights_state_and_loss():
    model, opt, loss = _train("bf16")
    _, _, loss32 = _train("fp32")
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(v.dtype == torch.float32 for s in opt.state.values() for k, v in s.items() if k != "step")
    assert np.isfinite(loss) and loss != loss32 and abs(loss - loss32) < 0.05  # bf16 did run, and closely


def test_occlusion_bf16_is_close_to_fp32_and_fp32_is_the_default():
    torch.manual_seed(0)
    from cnn_cluster.models import build_model

    model = build_model(ModelConfig(conv_filters=(4, 8), fc_layers=(8,)), 3, 24).eval()
    x = torch.randn(2, 3, 24, 24)
    default = occlusion_map(model, x, [0, 1], window=4, stride=2).maps
    fp32 = occlusion_map(model, x, [0, 1], window=4, stride=2, precision="fp32").maps
    bf16 = occlusion_map(model, x, [0, 1], window=4, stride=2, precision="bf16").maps
    assert torch.equal(default, fp32) and not torch.equal(bf16, fp32)
    assert float((bf16 - fp32).abs().max()) < 0.05


def test_augment_matches_a_per_image_crop_of_the_same_draws():
    """The one-gather flip and crop equals, image by image, flipping then slicing the padded image at
    the offsets the same generator draws: the same distribution, without a Python loop per image."""
    import torch.nn.functional as F

    from cnn_cluster.training.augment import flip_crop

    x = torch.randn(16, 3, 12, 10).contiguous(memory_format=torch.channels_last)
    out = flip_crop(x, torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    flip = torch.rand(16, generator=g) < 0.5
    offs = torch.randint(0, 9, (16, 2), generator=g).tolist()
    padded = F.pad(torch.where(flip.view(16, 1, 1, 1), x.flip(3), x), (4, 4, 4, 4))
    ref = torch.stack([padded[i, :, dy:dy + 12, dx:dx + 10] for i, (dy, dx) in enumerate(offs)])
    assert torch.equal(out, ref) and out.is_contiguous(memory_format=torch.channels_last)
    assert {tuple(o) for o in offs} != {(4, 4)}  # some images really moved
