"""Tests of the HAG attack on a tiny DPH model trained for a few seconds."""

from __future__ import annotations

import pytest
import torch

from attacks import ATTACKS
from attacks.hag import HAG, hag_bit_mask, hag_loss
from models import MODELS
from models.base import HashingModel
from models.imageset import TensorImageSet
from models.training import TrainConfig, train_model

EPS = 8 / 255


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor]:
    """Return 64 16x16 grey images of 4 classes (a class pattern plus noise) and one-hot labels."""
    generator = torch.Generator().manual_seed(0)
    classes = torch.arange(64) % 4
    patterns = torch.rand(4, 1, 16, 16, generator=generator)
    images = patterns[classes] * 0.7 + 0.3 * torch.rand(64, 1, 16, 16, generator=generator)
    return images, torch.nn.functional.one_hot(classes, 4).to(torch.float32)


@pytest.fixture(scope="module")
def model(data: tuple[torch.Tensor, torch.Tensor]) -> HashingModel:
    torch.set_num_threads(1)
    images, labels = data
    victim = MODELS.create("dph", n_bits=16, n_classes=4, backbone="small-cnn", in_channels=1, image_size=16)
    pixels = (images * 255).round().to(torch.uint8)
    train_model(victim, TensorImageSet(pixels, labels), TrainConfig(epochs=3, batch_size=16))
    return victim.eval()


def test_bit_mask_values_and_tie() -> None:
    clean = torch.tensor([[0.5, -0.25, 0.75, -0.5]])
    outputs = torch.tensor([[0.2, 0.1, -0.5, 0.6]])
    # |outputs - sign(clean)| = 0.8, 1.1, 1.5 (exact tie), 1.6
    assert hag_bit_mask(outputs, clean).tolist() == [[1.0, 1.0, 0.5, 0.0]]


def test_loss_matches_hand_computation() -> None:
    clean = torch.tensor([[0.5, -0.25, 0.75, -0.5], [0.3, 0.3, -0.3, -0.3]])
    outputs = torch.tensor([[0.2, 0.1, -0.5, 0.6], [-0.9, -0.6, 0.9, 0.7]])
    # Image 0: mask (1, 1, 0.5, 0), sum m g h = 0.1 - 0.025 - 0.1875 = -0.1125 and sum m = 2.5,
    # so (-0.1125 / 2.5 + 1)^2 = 0.955^2 = 0.912025. Balance: (0.4 / 4)^2 = 0.01.
    # Image 1: every bit masked, so the first term is (0 + 1)^2 = 1. Balance: (0.1 / 4)^2 = 0.000625.
    expected = torch.tensor([0.912025 + 0.01, 1.0 + 0.000625])

    losses = hag_loss(outputs, clean)

    assert torch.allclose(losses, expected, atol=1e-6)
    assert torch.allclose(hag_loss(outputs, clean, beta=0.0), expected - torch.tensor([0.01, 0.000625]), atol=1e-6)


def test_loss_gradient_by_hand() -> None:
    clean = torch.tensor([[0.5, -0.5]])
    outputs = torch.tensor([[0.2, -0.9]], requires_grad=True)
    hag_loss(outputs, clean, beta=0.0).sum().backward()
    # Both bits unmasked: L = ((0.1 + 0.45) / 2 + 1)^2, dL/dg_k = 2 * 1.275 * h_k / 2.
    assert torch.allclose(outputs.grad, torch.tensor([[1.275 * 0.5, 1.275 * -0.5]]), atol=1e-6)


def test_step_independent_of_batch_size(model: HashingModel, data: tuple[torch.Tensor, torch.Tensor]) -> None:
    images, labels = data[0][:3], data[1][:3]
    attack = HAG(steps=10)

    alone = attack.run(model, images[:1], labels[:1]).images
    in_batch = attack.run(model, images, labels).images

    assert torch.allclose(alone[0], in_batch[0], atol=1e-6)


def test_batch_mean_depends_on_batch_size(
    model: HashingModel, data: tuple[torch.Tensor, torch.Tensor]
) -> None:
    images, labels = data[0][:3], data[1][:3]
    attack = HAG(steps=10, batch_scaled_lr=True)

    alone = attack.run(model, images[:1], labels[:1]).images
    in_batch = attack.run(model, images, labels).images

    assert (alone[0] - in_batch[0]).abs().max() > 1e-3


def test_batch_mean_matches_reference_batch(
    model: HashingModel, data: tuple[torch.Tensor, torch.Tensor]
) -> None:
    images, labels = data[0][:3], data[1][:3]
    default = HAG(steps=10, reference_batch=3).run(model, images, labels).images
    parity = HAG(steps=10, batch_scaled_lr=True).run(model, images, labels).images
    assert torch.allclose(default, parity, atol=1e-6)


def test_output_bounded_and_finite(model: HashingModel, data: tuple[torch.Tensor, torch.Tensor]) -> None:
    images, labels = data[0][:8], data[1][:8]
    adversarial = HAG(steps=10).run(model, images, labels).images
    assert torch.isfinite(adversarial).all()
    assert (adversarial - images).abs().max() <= EPS + 1e-6
    assert adversarial.min() >= 0
    assert adversarial.max() <= 1


def test_same_seed_same_images(model: HashingModel, data: tuple[torch.Tensor, torch.Tensor]) -> None:
    images, labels = data[0][:4], data[1][:4]
    first = HAG(steps=5, random_start=True, seed=3).run(model, images, labels).images
    second = HAG(steps=5, random_start=True, seed=3).run(model, images, labels).images
    other_seed = HAG(steps=5, random_start=True, seed=4).run(model, images, labels).images
    assert torch.equal(first, second)
    assert not torch.equal(first, other_seed)


def test_attack_flips_bits(model: HashingModel, data: tuple[torch.Tensor, torch.Tensor]) -> None:
    images, labels = data[0][:8], data[1][:8]
    clean_codes = model.encode(images)

    output = HAG(steps=20).run(model, images, labels)

    flipped = (model.encode(output.images) != clean_codes).sum()
    assert flipped > 0


def test_theory_codes_flip_clean_code(model: HashingModel, data: tuple[torch.Tensor, torch.Tensor]) -> None:
    images, labels = data[0][:4], data[1][:4]
    output = HAG(steps=1).run(model, images, labels)
    assert torch.equal(output.theory_codes, -model.encode(images))


def test_registered_defaults() -> None:
    attack = ATTACKS.create("hag")
    assert isinstance(attack, HAG)
    assert not attack.capabilities.targeted
    assert not attack.capabilities.label_aware
    config = attack.config()
    assert config["steps"] == 2000
    assert config["lr"] == 100.0
    assert config["momentum"] == 0.9
    assert config["random_start"] is False
    assert config["batch_scaled_lr"] is False
    assert config["reference_batch"] == 128
