"""Tests that every registered hashing model builds, encodes and trains on the CPU."""

from __future__ import annotations

import pytest
import torch

from models import MODELS
from models.base import build_model
from models.errors import ConfigError, TrainingDivergedError
from models.training import TrainConfig, encode_images, train_model

MODEL_NAMES = MODELS.names()


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_forward_shape_and_range(make_model, tiny_images, name: str) -> None:
    model = make_model(name).eval()

    with torch.no_grad():
        outputs = model(tiny_images)

    assert outputs.shape == (6, 16)
    assert outputs.dtype == torch.float32
    assert (outputs.abs() < 1).all()


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_encode_binary(make_model, tiny_images, name: str) -> None:
    model = make_model(name).eval()

    codes = model.encode(tiny_images)

    assert codes.shape == (6, 16)
    assert set(codes.unique().tolist()) <= {-1.0, 1.0}
    with torch.no_grad():
        assert torch.equal(codes, torch.where(model(tiny_images) >= 0, 1.0, -1.0))


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_scale_changes_output(make_model, tiny_images, name: str) -> None:
    model = make_model(name).eval()

    with torch.no_grad():
        z = model.pre_activation(tiny_images)
        flat = model(tiny_images, 0.5)
        full = model(tiny_images, 1.0)

    assert not torch.allclose(flat, full)
    assert torch.allclose(flat, torch.tanh(0.5 * z), atol=1e-6)
    assert torch.allclose(full, torch.tanh(z), atol=1e-6)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_normalisation_inside_forward(make_model, tiny_images, name: str) -> None:
    normalising = make_model(name, mean=(0.3,), std=(0.2,), seed=5).eval()
    identity = make_model(name, mean=(0.0,), std=(1.0,), seed=5).eval()

    with torch.no_grad():
        expected = identity((tiny_images - 0.3) / 0.2)
        assert torch.allclose(normalising(tiny_images), expected, atol=1e-6)


def test_normalisation_per_channel(make_model) -> None:
    mean, std = (0.1, 0.5, 0.9), (0.2, 0.3, 0.4)
    normalising = make_model("dph", in_channels=3, mean=mean, std=std, seed=2).eval()
    identity = make_model("dph", in_channels=3, mean=(0.0,) * 3, std=(1.0,) * 3, seed=2).eval()
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    manual = images.clone()
    for channel in range(3):
        manual[:, channel] = (images[:, channel] - mean[channel]) / std[channel]

    with torch.no_grad():
        assert torch.allclose(normalising(images), identity(manual), atol=1e-6)


def test_default_grey_statistics(make_model) -> None:
    # One input channel takes the mean of the ImageNet RGB statistics.
    model = make_model("dph")

    assert model.mean.flatten().tolist() == pytest.approx([(0.485 + 0.456 + 0.406) / 3])
    assert model.std.flatten().tolist() == pytest.approx([(0.229 + 0.224 + 0.225) / 3])


def test_statistics_per_channel_required(make_model) -> None:
    with pytest.raises(ConfigError, match="one value per input channel"):
        make_model("dph", in_channels=3, mean=(0.5,), std=(0.2,))


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_buffers_move_with_to(make_model, name: str) -> None:
    model = make_model(name).to(torch.float64)
    on_meta = make_model(name).to("meta")

    for buffer_name, buffer in model.named_buffers():
        if buffer.is_floating_point():
            assert buffer.dtype == torch.float64, buffer_name
    for buffer_name, buffer in on_meta.named_buffers():
        assert buffer.device.type == "meta", buffer_name
    assert model.mean.dtype == torch.float64
    assert on_meta.std.device.type == "meta"


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_float64_forward(make_model, tiny_images, name: str) -> None:
    model = make_model(name).to(torch.float64).eval()

    with torch.no_grad():
        outputs = model(tiny_images.to(torch.float64))

    assert outputs.dtype == torch.float64


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_same_seed_same_init(make_model, name: str) -> None:
    first = make_model(name, seed=3).state_dict()
    second = make_model(name, seed=3).state_dict()
    other = make_model(name, seed=4).state_dict()

    for key in first:
        assert torch.equal(first[key], second[key]), key
    assert not torch.equal(first["hash_layer.weight"], other["hash_layer.weight"])


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_config_rebuilds_model(make_model, tiny_images, name: str) -> None:
    model = make_model(name, seed=7).eval()

    rebuilt = build_model(model.config()).eval()

    assert rebuilt.config() == model.config()
    with torch.no_grad():
        assert torch.equal(rebuilt(tiny_images), model(tiny_images))


@pytest.mark.parametrize("n_bits", [0, -4, 1.5, "16", None])
def test_invalid_bits_rejected(make_model, n_bits: object) -> None:
    with pytest.raises(ConfigError, match="n_bits must be a positive integer"):
        make_model("dph", n_bits=n_bits)


@pytest.mark.parametrize("n_classes", [0, 2.0])
def test_invalid_classes_rejected(make_model, n_classes: object) -> None:
    with pytest.raises(ConfigError, match="n_classes must be a positive integer"):
        make_model("dph", n_classes=n_classes)


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("dpsh", {"variant": "other"}, "unknown DPSH variant"),
        ("hashnet", {"eval_scale": "other"}, "unknown HashNet eval_scale"),
        ("hashnet", {"pair_scale": -1.0}, "invalid HashNet pair_scale"),
        ("dph", {"backbone": "no-such-net"}, "unknown backbone"),
    ],
)
def test_invalid_method_options(make_model, name: str, options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make_model(name, **options)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_training_lowers_loss(make_model, toy_image_set, name: str) -> None:
    model = make_model(name)
    config = TrainConfig(epochs=4, batch_size=8, lr_schedule="constant")

    history = train_model(model, toy_image_set, config)

    assert len(history) == 4
    assert history[-1]["loss"] < history[0]["loss"]
    assert not model.training


def test_training_seeded(make_model, toy_image_set) -> None:
    config = TrainConfig(epochs=1, batch_size=8)
    first = make_model("dph")
    second = make_model("dph")

    train_model(first, toy_image_set, config)
    train_model(second, toy_image_set, config)

    for key, value in first.state_dict().items():
        assert torch.equal(second.state_dict()[key], value), key


DIVERGING = MODEL_NAMES


@pytest.mark.parametrize("name", DIVERGING)
def test_huge_lr_raises_diverged(make_model, toy_image_set, name: str) -> None:
    model = make_model(name)

    with pytest.raises(TrainingDivergedError, match="lower the learning rate"):
        train_model(model, toy_image_set, TrainConfig(epochs=2, batch_size=8, lr=1e30))


def test_train_config_validation() -> None:
    with pytest.raises(ConfigError):
        TrainConfig(epochs=0)
    with pytest.raises(ConfigError):
        TrainConfig(lr=0.0)
    with pytest.raises(ConfigError, match="unknown lr_schedule"):
        TrainConfig(lr_schedule="cosine")


def test_lr_thirds_schedule() -> None:
    config = TrainConfig(epochs=9, lr=0.1)

    rates = [config.lr_at(epoch) for epoch in range(9)]

    # E // 3 = 3, so epoch t >= 1 uses 0.1 * 0.1 ** ((t - 1) // 3): 0.1 for t <= 3, 0.01 for 4..6, 0.001 for 7, 8.
    expected = [0.1, 0.1, 0.1, 0.1, 0.01, 0.01, 0.01, 0.001, 0.001]
    assert rates == pytest.approx(expected)


def test_encode_images_matches_encode(trained_victim, toy_image_set) -> None:
    was_training = trained_victim.training

    codes = encode_images(trained_victim, toy_image_set, batch_size=10)

    assert codes.shape == (32, 16)
    assert torch.equal(codes, trained_victim.encode(toy_image_set.images(torch.arange(32))))
    assert trained_victim.training == was_training
