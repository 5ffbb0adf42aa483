"""ProS-GAN: network shapes per image size, clipped and raw outputs, determinism."""

from __future__ import annotations

import pytest
import torch

import models
from attacks import ATTACKS, VictimKnowledge, select_target_labels
from attacks.prosgan import (
    ProSGAN,
    ProsGanDiscriminator,
    ProsGanGenerator,
    count_halvings,
    least_squares_loss,
)
from models.codes import binarize
from models.errors import DataError, UnsupportedPairingError
from models.imageset import TensorImageSet

EPS = 8 / 255
TINY = {
    "epochs": 1, "gan_batch_size": 4, "width": 8, "label_width": 8, "residual_blocks": 1,
    "discriminator_width": 8, "prototype_steps": 5, "prototype_batch_size": 8, "hidden_size": 32,
    "feature_size": 16,
}


def tiny_victim() -> models.HashingModel:
    return models.MODELS.create("dph", n_bits=16, n_classes=4, in_channels=1, image_size=16).eval()


def tiny_knowledge() -> VictimKnowledge:
    generator = torch.Generator().manual_seed(0)
    labels = torch.eye(4)[torch.arange(40) % 4]
    codes = binarize(torch.randn(40, 16, generator=generator))
    pixels = torch.randint(0, 256, (12, 1, 16, 16), generator=generator, dtype=torch.uint8)
    return VictimKnowledge(train_codes=codes, train_labels=labels, database_codes=codes, database_labels=labels,
                           train_images=TensorImageSet(pixels, labels[:12]))


def tiny_queries():
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(6, 1, 16, 16, generator=generator)
    labels = torch.eye(4)[torch.tensor([0, 1, 2, 3, 0, 2])]
    targets, _ = select_target_labels(labels, tiny_knowledge().database_labels, seed=0)
    return images, labels, targets


def fitted_attack(**options) -> ProSGAN:
    attack = ATTACKS.create("prosgan", **{**TINY, **options})
    attack.fit(tiny_victim(), tiny_knowledge())
    return attack


@pytest.mark.parametrize(
    ("height", "width", "max_count", "expected"),
    [(224, 224, 4, 4), (224, 224, 5, 5), (224, 224, 2, 2), (28, 28, 5, 2), (56, 56, 5, 3),
     (16, 16, 5, 2), (32, 32, 5, 3), (15, 15, 5, 0), (32, 16, 5, 2)],
)
def test_count_halvings(height: int, width: int, max_count: int, expected: int) -> None:
    assert count_halvings(height, width, max_count) == expected


@pytest.mark.parametrize("shape", [(1, 16, 16), (1, 28, 28), (1, 56, 56), (3, 32, 32), (3, 224, 224)])
def test_networks_fit_image_shape(shape: tuple[int, int, int]) -> None:
    torch.manual_seed(0)
    generator = ProsGanGenerator(shape, feature_size=16, width=4, label_width=8, residual_blocks=1)
    discriminator = ProsGanDiscriminator(shape, 5, width=4)
    images = torch.rand(2, *shape) * 2 - 1

    generated = generator(images, torch.randn(2, 16))

    assert generated.shape == (2, *shape)
    assert generated.abs().max() < 1
    assert discriminator(generated).shape == (2, 6)
    assert discriminator(generated[:1]).shape == (1, 6)


def test_networks_match_reference_layout_at_224() -> None:
    generator = ProsGanGenerator((3, 224, 224))
    discriminator = ProsGanDiscriminator((3, 224, 224), 38)
    assert generator.label_stages == 4
    assert generator.label_start == (128, 14, 14)
    assert generator.image_stages == 2
    assert generator.label_decoder[-1].in_channels == 8
    assert generator.head.in_channels == 64 + 3
    assert discriminator.stages == 5
    assert discriminator.output.in_channels == 1024
    assert discriminator.output.kernel_size == (7, 7)


def test_networks_shrink_for_small_images() -> None:
    generator = ProsGanGenerator((1, 28, 28), width=16, label_width=32, residual_blocks=2)
    discriminator = ProsGanDiscriminator((1, 28, 28), 10, width=16)
    assert (generator.label_stages, generator.image_stages, discriminator.stages) == (2, 2, 2)
    assert generator.label_start == (32, 7, 7)
    assert discriminator.output.kernel_size == (7, 7)


def test_least_squares_loss_appends_flag() -> None:
    labels = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    logits = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
    assert least_squares_loss(logits, labels, 1.0).item() == 0
    assert least_squares_loss(logits, labels, 0.0).item() == pytest.approx(1 / 3)


def test_prosgan_registered_as_unbounded() -> None:
    attack = ATTACKS.create("prosgan")
    assert isinstance(attack, ProSGAN)
    caps = attack.capabilities
    assert caps.targeted
    assert caps.needs_train_images
    assert caps.needs_train_codes
    assert caps.needs_database_codes
    assert not caps.bounded
    assert (attack.epochs, attack.gan_batch_size, attack.reconstruction_weight) == (100, 24, 50.0)
    assert (attack.prototype_steps, attack.prototype_batch_size) == (30_000, 64)


def test_prosgan_clipped_and_unbounded_outputs() -> None:
    images, labels, targets = tiny_queries()
    attack = fitted_attack()
    output = attack.run(tiny_victim(), images, labels, targets)
    unbounded = output.extra_images["unbounded"]

    assert output.images.shape == images.shape
    assert torch.isfinite(output.images).all()
    assert output.images.min() >= 0
    assert output.images.max() <= 1
    assert (output.images - images).abs().max() <= EPS + 1e-6
    assert unbounded.shape == images.shape
    assert torch.isfinite(unbounded).all()
    assert unbounded.min() >= 0
    assert unbounded.max() <= 1
    assert (unbounded - images).abs().max() > EPS
    assert torch.equal(attack.project(images, unbounded), output.images)
    assert output.theory_codes.shape == (6, 16)
    assert set(output.theory_codes.unique().tolist()) <= {-1.0, 1.0}


def test_prosgan_batches_keep_query_order() -> None:
    images, labels, targets = tiny_queries()
    attack = fitted_attack()
    whole = attack.run(tiny_victim(), images, labels, targets)
    attack.batch_size = 4
    split = attack.run(tiny_victim(), images, labels, targets)
    assert split.extra_images["unbounded"].shape == images.shape
    torch.testing.assert_close(split.extra_images["unbounded"], whole.extra_images["unbounded"])
    torch.testing.assert_close(split.images, whole.images)


def test_prosgan_same_seed_same_images() -> None:
    images, labels, targets = tiny_queries()
    first = fitted_attack(seed=2)
    second = fitted_attack(seed=2)
    state_first, state_second = first.prepared_state(), second.prepared_state()
    assert state_first.keys() == state_second.keys()
    assert all(torch.equal(state_first[key], state_second[key]) for key in state_first)
    output_first = first.run(tiny_victim(), images, labels, targets)
    output_second = second.run(tiny_victim(), images, labels, targets)
    assert torch.equal(output_first.images, output_second.images)
    assert torch.equal(output_first.extra_images["unbounded"], output_second.extra_images["unbounded"])


def test_prosgan_prepared_state_round_trip() -> None:
    images, labels, targets = tiny_queries()
    trained = fitted_attack()
    expected = trained.run(tiny_victim(), images, labels, targets)

    restored = ATTACKS.create("prosgan", **TINY)
    restored.load_prepared_state(trained.prepared_state())
    output = restored.run(tiny_victim(), images, labels, targets)

    assert torch.equal(output.images, expected.images)
    assert torch.equal(output.extra_images["unbounded"], expected.extra_images["unbounded"])
    assert torch.equal(output.theory_codes, expected.theory_codes)


def test_prosgan_needs_training_images() -> None:
    knowledge = tiny_knowledge()
    knowledge.train_images = None
    with pytest.raises(UnsupportedPairingError, match="training images"):
        ATTACKS.create("prosgan", **TINY).fit(tiny_victim(), knowledge)


def test_prosgan_rejects_other_image_shape() -> None:
    _, labels, targets = tiny_queries()
    attack = fitted_attack()
    with pytest.raises(DataError, match="generator was trained"):
        attack.run(tiny_victim(), torch.rand(6, 1, 28, 28), labels, targets)


def test_prosgan_fit_config_lists_training_settings() -> None:
    config = ATTACKS.create("prosgan", **TINY, reconstruction_weight=100, seed=5).fit_config()
    assert config["attack"] == "prosgan"
    assert config["seed"] == 5
    assert config["reconstruction_weight"] == 100
    assert (config["width"], config["label_width"], config["residual_blocks"]) == (8, 8, 1)
    assert (config["hidden_size"], config["feature_size"]) == (32, 16)
    assert "eps" not in config  # the clip happens at attack time
