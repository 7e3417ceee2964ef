"""The recipe options, each checked by what it does to a batch: resized crops, colour jitter, mixup,
CutMix, the weight average and Nesterov SGD. Batches are built so the right answer can be worked out
by hand (a pixel ramp, a constant gray, two-image batches)."""

import numpy as np
import pytest
import torch

from cnn_cluster.training import augment
from cnn_cluster.config import Experiment, ModelConfig, TrainConfig, validate
from cnn_cluster.errors import ConfigError
from cnn_cluster.training.step import (Arrays, ema_decay, epoch_batches, initial_model, make_ema, make_optimizer,
                                       train_epoch)

CPU = torch.device("cpu")


def test_crop_boxes_stay_inside_the_image_with_the_drawn_area():
    boxes = augment.crop_boxes(4000, torch.Generator().manual_seed(0), (0.35, 1.0))
    w, h, cx, cy = boxes.unbind(1)
    assert bool(((cx.abs() + w) <= 1 + 1e-6).all() and ((cy.abs() + h) <= 1 + 1e-6).all())
    area = w * h  # sides are half-widths of a [-1, 1] square: w * h is the share of the image
    unclamped = (w < 1) & (h < 1)
    assert bool(((area[unclamped] >= 0.35 - 1e-6) & (area[unclamped] <= 1 + 1e-6)).all())
    assert 0.55 < float(area.mean()) < 0.7  # uniform in [0.35, 1] but for the clamped sides
    assert float(cx.std()) > 0.1 and float((w / h).log().std()) > 0.05  # positions and shapes vary


def test_resized_crop_samples_the_drawn_box_and_mirrors_half():
    """On ramps whose value is the column (channel 0) and the row (channel 1) index, bilinear sampling
    returns the source coordinate itself: each output row must run linearly from the box's left edge to
    its right (or back, mirrored), each column from its top to its bottom."""
    b, hgt, wid = 256, 12, 20
    cols = torch.arange(wid, dtype=torch.float32).expand(b, hgt, wid)
    rows = torch.arange(hgt, dtype=torch.float32)[:, None].expand(b, hgt, wid)
    ramp = torch.stack([cols, rows, cols], 1).contiguous()
    out = augment.resized_crop(ramp, torch.Generator().manual_seed(1), (0.2, 1.0))
    g = torch.Generator().manual_seed(1)
    w, h, cx, cy = augment.crop_boxes(b, g, (0.2, 1.0)).unbind(1)
    mirrored = torch.rand(b, generator=g) < 0.5
    sign = torch.where(mirrored, -1.0, 1.0)[:, None]

    def source(scale: torch.Tensor, centre: torch.Tensor, n: int) -> torch.Tensor:
        centres = (2 * torch.arange(n) + 1) / n - 1  # output pixel centres in [-1, 1]
        return (((scale[:, None] * centres + centre[:, None]) + 1) * n - 1).div(2).clamp(0, n - 1)

    assert torch.allclose(out[:, 0], source(sign[:, 0] * w, cx, wid)[:, None, :].expand(b, hgt, wid), atol=1e-4)
    assert torch.allclose(out[:, 1], source(h, cy, hgt)[:, :, None].expand(b, hgt, wid), atol=1e-4)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert 0.35 < float(mirrored.float().mean()) < 0.65


def test_color_jitter_scales_a_gray_image_by_the_brightness_factor_only():
    """A constant mid-gray has no contrast and no colour to change: the output is 0.5 x brightness,
    with brightness uniform in [1 - s, 1 + s], different per image."""
    mean, std = torch.tensor([0.4, 0.5, 0.6]).view(1, 3, 1, 1), torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1)
    gray = (torch.full((2000, 3, 4, 4), 0.5) - mean) / std
    out = augment.color_jitter(gray, torch.Generator().manual_seed(0), 0.4, mean, std) * std + mean
    factor = out[:, :, 0, 0] / 0.5
    assert torch.allclose(factor, factor[:, :1].expand_as(factor), atol=1e-5)  # one factor per image, all channels
    assert torch.allclose(out, out[:, :, :1, :1].expand_as(out), atol=1e-5)  # still flat
    assert float(factor.min()) >= 0.6 - 1e-5 and float(factor.max()) <= 1.4 + 1e-5
    assert abs(float(factor.mean()) - 1.0) < 0.02 and float(factor.std()) > 0.2  # ~U(0.6, 1.4): std 0.23


def test_color_jitter_equals_torchvision_per_image_where_no_step_leaves_the_range():
    """The one colour matrix per image gives torchvision's brightness, contrast and saturation in turn,
    with the factors this generator draws."""
    import torchvision.transforms.v2.functional as TF

    mean, std = torch.tensor([0.4, 0.5, 0.6]).view(1, 3, 1, 1), torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1)
    img = torch.rand(6, 3, 16, 16) * 0.5 + 0.25  # factors within 0.3 of 1 keep every step inside [0, 1]
    x = ((img - mean) / std).contiguous(memory_format=torch.channels_last)
    out = augment.color_jitter(x, torch.Generator().manual_seed(5), 0.3, mean, std) * std + mean
    fb, fc, fs = 1 + 0.3 * (2 * torch.rand(3, 6, generator=torch.Generator().manual_seed(5)) - 1)
    for i in range(6):
        ref = TF.adjust_saturation(TF.adjust_contrast(TF.adjust_brightness(img[i], float(fb[i])), float(fc[i])),
                                   float(fs[i]))
        assert torch.allclose(out[i], ref, atol=1e-4)


def test_color_jitter_of_strength_zero_changes_nothing():
    mean, std = torch.full((1, 3, 1, 1), 0.5), torch.full((1, 3, 1, 1), 0.25)
    x = ((torch.rand(8, 3, 6, 6) - mean) / std)
    assert torch.allclose(augment.color_jitter(x, torch.Generator().manual_seed(0), 0.0, mean, std), x, atol=1e-5)


def test_color_jitter_desaturates_and_saturates_around_the_gray():
    """Saturation moves each pixel along the line through its gray value: the gray stays (up to the
    brightness and contrast factors), the colour difference scales."""
    mean, std = torch.zeros(1, 3, 1, 1), torch.ones(1, 3, 1, 1)
    x = torch.tensor([0.6, 0.4, 0.5]).view(1, 3, 1, 1).expand(500, 3, 2, 2).contiguous()
    out = augment.color_jitter(x, torch.Generator().manual_seed(4), 0.3, mean, std)
    spread = (out[:, 0] - out[:, 1])[:, 0, 0] / 0.2
    assert float(spread.min()) < 0.85 and float(spread.max()) > 1.15  # some images lose colour, some gain


def _mixed(cfg: TrainConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    x = torch.randn(8, 3, 16, 16)
    y = torch.arange(8)
    out, target = augment.batch_mixer(cfg, 10)(x, y)
    return x, y, out, target


def test_mixup_blends_each_image_with_its_neighbour_by_the_target_weight():
    x, y, out, target = _mixed(TrainConfig(mixup=0.4))
    lam = target[torch.arange(8), y]  # torchvision mixes image i with image i - 1 (the batch rolled by one)
    assert torch.allclose(lam, lam[:1].expand(8)) and 0 < float(lam[0]) < 1
    assert torch.allclose(target[torch.arange(8), y.roll(1)], 1 - lam)
    assert torch.allclose(out, lam[0] * x + (1 - lam[0]) * x.roll(1, 0), atol=1e-6)
    assert torch.allclose(target.sum(1), torch.ones(8))


def test_cutmix_pastes_a_box_whose_area_is_the_target_weight():
    x, y, out, target = _mixed(TrainConfig(cutmix=1.0))
    from_self = (out == x).all(1)  # (b, h, w): pixels kept from the image itself
    from_other = (out == x.roll(1, 0)).all(1)
    assert bool((from_self | from_other).all())
    lam = target[torch.arange(8), y]
    assert torch.allclose(from_self.float().mean((1, 2)), lam, atol=1e-6) and float(lam[0]) < 1


def test_no_mixer_without_mixup_or_cutmix():
    assert augment.batch_mixer(TrainConfig(), 10) is None


def _tiny(cfg: TrainConfig) -> tuple[torch.nn.Module, torch.optim.Optimizer, Arrays, list[np.ndarray]]:
    rng = np.random.default_rng(0)
    arrays = Arrays(rng.integers(0, 256, (48, 16, 16, 3), dtype=np.uint8), rng.integers(0, 4, 48),
                    np.zeros(48, np.uint8), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), 4)
    exp = Experiment(name="x", model=ModelConfig(conv_filters=(4,), fc_layers=(8,)), train=cfg)
    model = initial_model(exp, arrays, CPU)
    return model, make_optimizer(model, cfg), arrays, epoch_batches(np.arange(48), 16, 0, 1, 0, 1)


def test_ema_follows_the_weights_step_by_step():
    cfg = TrainConfig(batch_size=16, lr=0.01, ema=0.9, precision="fp32")
    model, opt, arrays, batches = _tiny(cfg)
    ema = make_ema(model, cfg)
    after = []  # the model's weights after each step
    train_epoch(model, opt, arrays, batches, cfg, 0, 3, CPU, torch.Generator().manual_seed(0),
                on_batch=lambda *_: after.append([p.detach().clone() for p in model.parameters()]), ema=ema)
    expected = after[0]  # the first update copies the weights
    for n, step in enumerate(after[1:], start=1):  # then the warmed-up decay: 2/11, 3/12, ... up to 0.9
        d = ema_decay(0.9, n)
        expected = [d * e + (1 - d) * p for e, p in zip(expected, step)]
    for e, p, m in zip(expected, ema.module.parameters(), model.parameters()):
        assert torch.allclose(e, p, atol=1e-6) and not torch.equal(p, m)
    assert make_ema(model, TrainConfig()) is None


def test_ema_forgets_the_random_initial_weights_within_a_few_hundred_steps():
    """The warm-up: a constant 0.999 would keep 0.999^n of the initial weights (82 % after 200 steps)."""
    assert [round(ema_decay(0.999, n), 4) for n in (1, 10, 90)] == [0.1818, 0.55, 0.91]
    assert ema_decay(0.999, 100_000) == 0.999
    kept = 1.0
    for n in range(1, 200):
        kept *= ema_decay(0.999, n)
    assert kept < 1e-3


def test_sgd_is_nesterov_with_the_configured_momentum():
    cfg = TrainConfig(optimizer="sgd", lr=0.05, momentum=0.8, weight_decay=1e-4)
    model, opt, _, _ = _tiny(cfg)
    group = opt.param_groups[0]
    assert isinstance(opt, torch.optim.SGD) and group["nesterov"] and group["momentum"] == 0.8
    assert group["weight_decay"] == 1e-4


def test_every_option_at_once_trains_with_finite_loss():
    cfg = TrainConfig(batch_size=16, augmentation="resized_crop", color_jitter=0.3, mixup=0.2, cutmix=1.0,
                      ema=0.99, optimizer="sgd", lr=0.05)
    model, opt, arrays, batches = _tiny(cfg)
    loss, correct, seen = train_epoch(model, opt, arrays, batches, cfg, 0, 3, CPU, torch.Generator().manual_seed(0),
                                      ema=make_ema(model, cfg))
    assert np.isfinite(loss) and seen == 48 and 0 <= correct <= 48


@pytest.mark.parametrize("field,value,says", [
    ("crop_scale", [0.5, 0.2], "train.crop_scale"),
    ("crop_scale", [0.0, 1.0], "train.crop_scale"),
    ("color_jitter", 1.5, "train.color_jitter"),
    ("mixup", -1, "train.mixup"),
    ("ema", 1.0, "train.ema"),
    ("augmentation", "rrc", "train.augmentation"),
])
def test_bad_recipe_values_name_their_field(field, value, says):
    with pytest.raises(ConfigError, match=says.replace(".", r"\.")):
        validate({"train": {field: value}, "experiments": [{"conv_filters": [4]}]})


def test_test_time_flip_scores_an_image_and_its_mirror_alike():
    """With flipping on, a prediction cannot tell an image from its mirror; without, it can."""
    from cnn_cluster.training.step import predict

    model, _, arrays, _ = _tiny(TrainConfig())
    mirrored = Arrays(np.ascontiguousarray(arrays.images[:, :, ::-1]), arrays.labels, arrays.split, arrays.mean,
                      arrays.std, arrays.num_classes)
    idx = np.arange(48)
    both = [predict(model, a, idx, CPU, flip=True) for a in (arrays, mirrored)]
    plain = [predict(model, a, idx, CPU) for a in (arrays, mirrored)]
    assert torch.allclose(both[0], both[1], atol=1e-6) and not torch.allclose(plain[0], plain[1], atol=1e-4)
    assert torch.allclose(both[0], (plain[0] + plain[1]) / 2, atol=1e-6)


def test_ema_averages_a_batch_norm_model():
    """Batch norm's buffers are averaged too; its integer batch count is copied, not interpolated."""
    cfg = TrainConfig(batch_size=16, lr=0.01, ema=0.99, batch_norm=True, precision="fp32")
    model, opt, arrays, batches = _tiny(cfg)
    ema = make_ema(model, cfg)
    train_epoch(model, opt, arrays, batches, cfg, 0, 3, CPU, torch.Generator().manual_seed(0), ema=ema)
    counts = [b for n, b in ema.module.named_buffers() if n.endswith("num_batches_tracked")]
    assert counts and all(int(c) == len(batches) for c in counts)
