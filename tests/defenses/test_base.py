"""Tests of the shared adversarial-training pieces: inner attack, schedule, divergence, settings."""

from __future__ import annotations

import copy
import io
from typing import Any

import pytest
import torch

from defenses import DEFENSES
from defenses._base import Defense
from defenses.saat import SAAT
from models import MODELS
from models.base import HashingModel
from models.errors import ConfigError, TrainingDivergedError
from models.imageset import TensorImageSet

N_IMAGES = 16
N_BITS = 16
EPS = 8 / 255


@pytest.fixture(autouse=True)
def one_thread() -> None:
    torch.set_num_threads(1)


def make_image_set() -> TensorImageSet:
    """Return 16 random 1x16x16 images, where item i has class i % 4."""
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (N_IMAGES, 1, 16, 16), generator=generator, dtype=torch.uint8)
    labels = torch.nn.functional.one_hot(torch.arange(N_IMAGES) % 4, 4).to(torch.float32)
    return TensorImageSet(pixels, labels)


def make_model() -> HashingModel:
    return MODELS.create("dph", n_bits=N_BITS, n_classes=4, in_channels=1, image_size=16)


def make_images() -> torch.Tensor:
    """Return 8 images that include exact 0 and 1 pixels, so the [0, 1] clamp matters."""
    images = make_image_set().images(torch.arange(8))
    images[:, :, 0, :] = 0.0
    images[:, :, 1, :] = 1.0
    return images


def make_codes() -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.randint(0, 2, (8, N_BITS), generator=generator).to(torch.float32) * 2 - 1


# -- inner attack --------------------------------------------------------------
@pytest.mark.parametrize("inner_mode", ["train", "eval"])
def test_inner_attack_keeps_parameters(inner_mode: str) -> None:
    model = make_model().train()
    before = {name: value.detach().clone() for name, value in model.named_parameters()}
    defense = Defense(epochs=1, inner_mode=inner_mode)
    codes = make_codes()

    defense.inner_attack(model, make_images(), lambda outputs: (outputs * codes).mean(),
                         torch.Generator().manual_seed(0))

    for name, value in model.named_parameters():
        assert torch.equal(value, before[name]), name
        assert value.grad is None, name


@pytest.mark.parametrize("inner_mode", ["train", "eval"])
def test_inner_attack_stays_in_bounds(inner_mode: str) -> None:
    images = make_images()
    defense = Defense(epochs=1, inner_mode=inner_mode)
    codes = make_codes()

    adversarial = defense.inner_attack(make_model(), images, lambda outputs: (outputs * codes).mean(),
                                       torch.Generator().manual_seed(0))

    assert adversarial.requires_grad is False
    assert (adversarial - images).abs().max().item() <= EPS + 1e-6
    assert adversarial.min().item() >= 0.0
    assert adversarial.max().item() <= 1.0
    assert (adversarial - images).abs().max().item() > EPS / 2


@pytest.mark.parametrize("inner_mode", ["train", "eval"])
@pytest.mark.parametrize("start_training", [True, False])
def test_inner_attack_mode(inner_mode: str, start_training: bool) -> None:
    model = make_model().train(start_training)
    defense = Defense(epochs=1, steps=3, inner_mode=inner_mode)
    codes = make_codes()
    modes_seen = []

    def loss_and_record(outputs: torch.Tensor) -> torch.Tensor:
        modes_seen.append(model.training)
        return (outputs * codes).mean()

    defense.inner_attack(model, make_images(), loss_and_record, torch.Generator().manual_seed(0))

    assert modes_seen == [inner_mode == "train"] * 3
    assert model.training is start_training


def test_eval_mode_keeps_batchnorm_statistics() -> None:
    model = make_model().train()
    before = {name: value.clone() for name, value in model.named_buffers()}
    codes = make_codes()

    Defense(epochs=1, inner_mode="eval").inner_attack(
        model, make_images(), lambda outputs: (outputs * codes).mean(), torch.Generator().manual_seed(0))

    for name, value in model.named_buffers():
        assert torch.equal(value, before[name]), name


def test_train_mode_updates_batchnorm_statistics() -> None:
    model = make_model().train()
    before = model.head_norm.running_mean.clone()
    codes = make_codes()

    Defense(epochs=1, inner_mode="train").inner_attack(
        model, make_images(), lambda outputs: (outputs * codes).mean(), torch.Generator().manual_seed(0))

    assert not torch.equal(model.head_norm.running_mean, before)


def test_one_step_is_sign_gradient() -> None:
    model = make_model().eval()
    reference = copy.deepcopy(model)
    images = make_images()
    codes = make_codes()
    defense = Defense(epochs=1, steps=1, random_start=False, inner_mode="eval")

    adversarial = defense.inner_attack(model, images, lambda outputs: (outputs * codes).mean(),
                                       torch.Generator().manual_seed(0))

    inputs = images.clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad((reference(inputs) * codes).mean(), inputs)
    # One step of 2/255 stays inside eps = 8/255, so only the [0, 1] clamp applies.
    expected = (images - defense.alpha * gradient.sign()).clamp(0, 1)
    assert torch.allclose(adversarial, expected, atol=1e-6)


def test_random_start_within_eps() -> None:
    images = make_images()
    defense = Defense(epochs=1, steps=0, random_start=True)

    first = defense.inner_attack(make_model(), images, lambda outputs: outputs.mean(), torch.Generator().manual_seed(0))
    again = defense.inner_attack(make_model(), images, lambda outputs: outputs.mean(), torch.Generator().manual_seed(0))

    assert torch.equal(first, again)
    assert (first - images).abs().max().item() <= EPS + 1e-6
    assert (first - images).abs().max().item() > EPS / 2
    assert first.min().item() >= 0.0
    assert first.max().item() <= 1.0


def test_no_steps_no_start_is_identity() -> None:
    images = make_images()
    defense = Defense(epochs=1, steps=0, random_start=False)

    adversarial = defense.inner_attack(make_model(), images, lambda outputs: outputs.mean(),
                                       torch.Generator().manual_seed(0))

    assert torch.equal(adversarial, images)


# -- schedule ------------------------------------------------------------------
def test_multistep_scheduler_milestones() -> None:
    defense = Defense(epochs=1, lr=1.0)
    defense.total_iterations = 8
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    scheduler = defense.multistep_scheduler(optimizer)
    rates = []
    for _ in range(8):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()

    # Milestones int(8 * 0.5) = 4 and int(8 * 0.75) = 6.
    assert rates == pytest.approx([1.0, 1.0, 1.0, 1.0, 0.1, 0.1, 0.01, 0.01])


# -- divergence ----------------------------------------------------------------
@pytest.mark.parametrize("name", ["saat", "cgat", "atrdh"])
def test_divergence_keeps_saved_state(name: str) -> None:
    options: dict[str, Any] = {"epochs": 3, "batch_size": N_IMAGES, "lr": 1e30}
    if name == "atrdh":
        options.update(hidden_size=32, feature_size=16)
    defense = DEFENSES.create(name, **options)
    saved: dict[int, bytes] = {}

    def save(epoch: int, entry: dict[str, Any], state_fn) -> None:
        buffer = io.BytesIO()
        torch.save(state_fn(), buffer)
        saved[epoch] = buffer.getvalue()

    # One batch per epoch: the first loss comes from the victim's weights and is
    # finite, and the update at lr 1e30 makes the second one NaN.
    with pytest.raises(TrainingDivergedError) as error:
        defense.train(make_model(), make_image_set(), on_epoch=save)
    state = torch.load(io.BytesIO(saved[1]), weights_only=True)

    assert "epoch 2" in str(error.value)
    assert "1e+30" in str(error.value)
    assert list(saved) == [1]
    assert state["epoch"] == 1
    for key, value in state["model"].items():
        assert bool(torch.isfinite(value.to(torch.float64)).all()), key


def test_state_is_snapshot() -> None:
    defense = SAAT(epochs=2, batch_size=8, momentum=0.9)
    kept_states: dict[str, Any] = {}

    def keep(epoch: int, entry: dict[str, Any], state_fn) -> None:
        if epoch == 1:
            kept_states["live"] = state_fn()
            kept_states["copy"] = copy.deepcopy(kept_states["live"])

    defense.train(make_model(), make_image_set(), on_epoch=keep)
    live, copied = kept_states["live"]["defense"], kept_states["copy"]["defense"]

    assert torch.equal(live["loss"]["U"], copied["loss"]["U"])
    assert torch.equal(live["optimizer"]["state"][0]["momentum_buffer"],
                       copied["optimizer"]["state"][0]["momentum_buffer"])


# -- settings ------------------------------------------------------------------
INVALID_SETTINGS = [
    ({"epochs": 0}, "epochs (0)"),
    ({"batch_size": 0}, "batch_size (0)"),
    ({"lr": 0.0}, "lr (0.0)"),
    ({"inner_mode": "foo"}, "'foo'"),
    ({"eps": 2.0}, "eps=2.0"),
    ({"alpha": 0.0}, "alpha=0.0"),
    ({"steps": -1}, "steps=-1"),
]


@pytest.mark.parametrize("name", ["saat", "cgat", "atrdh"])
@pytest.mark.parametrize(("options", "fragment"), INVALID_SETTINGS)
def test_invalid_setting_raises(name: str, options: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError) as error:
        DEFENSES.create(name, **options)

    assert fragment in str(error.value)


@pytest.mark.parametrize("name", ["saat", "cgat"])
def test_invalid_bank_raises(name: str) -> None:
    with pytest.raises(ConfigError) as error:
        DEFENSES.create(name, bank="foo")

    assert "'foo'" in str(error.value)
    assert "reference_alias" in str(error.value)


def test_unknown_defense_raises() -> None:
    with pytest.raises(ConfigError) as error:
        DEFENSES.create("saatt")

    assert "'saatt'" in str(error.value)


def test_default_inner_attack() -> None:
    config = Defense().config()

    # 8/255 and 2/255 on the [0, 1] pixel scale.
    assert config["eps"] == pytest.approx(8 / 255)
    assert config["alpha"] == pytest.approx(2 / 255)
    assert config["steps"] == 7
    assert config["random_start"] is True
    assert config["inner_mode"] == "train"
    assert config["batch_size"] == 32
