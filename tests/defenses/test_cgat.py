"""Tests of CgAT's centre-code loss, bank and settings on a 16-image set."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
import torch

import defenses._base
from attacks import center_codes
from defenses import DEFENSES
from defenses.cgat import CgAT
from models import MODELS
from models.base import HashingModel
from models.codes import binarize
from models.imageset import TensorImageSet

N_IMAGES = 16
N_BITS = 16


@pytest.fixture(autouse=True)
def one_thread() -> None:
    torch.set_num_threads(1)


def make_image_set() -> TensorImageSet:
    """Return 16 random 1x16x16 images. Item i has class i % 4, and items 12-15 also have class (i + 1) % 4."""
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (N_IMAGES, 1, 16, 16), generator=generator, dtype=torch.uint8)
    classes = torch.arange(N_IMAGES) % 4
    labels = torch.nn.functional.one_hot(classes, 4).to(torch.float32)
    labels[12:, :] += torch.nn.functional.one_hot((classes[12:] + 1) % 4, 4).to(torch.float32)
    return TensorImageSet(pixels, labels)


def make_model() -> HashingModel:
    """Return an untrained DPH model with BatchNorm statistics calibrated on the image set.

    With the initial statistics the eval-mode codes of the 16 images share most
    bits, so most guide-code votes would be exact ties.
    """
    model = MODELS.create("dph", n_bits=N_BITS, n_classes=4, in_channels=1, image_size=16)
    images = make_image_set().images(torch.arange(N_IMAGES))
    model.train()
    with torch.no_grad():
        for _ in range(30):
            model(images)
    return model.eval()


def centre_by_hand(labels: torch.Tensor, bank: torch.Tensor, bank_labels: torch.Tensor) -> torch.Tensor:
    """Compute CgAT's centre code row by row: sign(mean of similar codes - mean of dissimilar codes), zeros kept."""
    codes = torch.empty(labels.shape[0], bank.shape[1])
    for row, label in enumerate(labels):
        similar = (bank_labels @ label) > 0
        codes[row] = torch.sign(bank[similar].mean(dim=0) - bank[~similar].mean(dim=0))
    return codes


def record_batches(monkeypatch: pytest.MonkeyPatch) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Make ``Defense.train`` append every (images, labels, indices) batch it draws to the returned list."""
    batches = []
    real_iterate = defenses._base.iterate_batches

    def iterate_and_record(*args: Any, **kwargs: Any):
        for batch in real_iterate(*args, **kwargs):
            batches.append(batch)
            yield batch

    monkeypatch.setattr(defenses._base, "iterate_batches", iterate_and_record)
    return batches


def test_loss_terms_match_hand(monkeypatch: pytest.MonkeyPatch) -> None:
    image_set = make_image_set()
    model = make_model()
    reference = copy.deepcopy(model)
    batches = record_batches(monkeypatch)
    entries = []
    # One batch of all 16 images and one eval-mode inner step from x (no random start).
    defense = CgAT(epochs=1, batch_size=N_IMAGES, steps=1, random_start=False, inner_mode="eval")
    defense.train(model, image_set, on_epoch=lambda epoch, entry, state_fn: entries.append(entry))
    images, labels, indices = batches[0]
    train_labels = image_set.labels

    reference.eval()
    with torch.no_grad():
        initial_codes = binarize(reference(image_set.images(torch.arange(N_IMAGES))))
    inner_codes = centre_by_hand(labels, initial_codes, train_labels)
    inputs = images.clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad((reference(inputs) * inner_codes).mean(), inputs)
    adversarial_images = (images - defense.alpha * gradient.sign()).clamp(0, 1)

    reference.train()
    with torch.no_grad():
        adversarial_outputs = reference(adversarial_images)
        benign_outputs = reference(images)
        bank = initial_codes.clone()
        bank[indices] = binarize(benign_outputs)
        outer_codes = centre_by_hand(labels, bank, train_labels)
        hash_loss_fn = reference.make_loss(N_IMAGES)
        hash_loss_fn.preload(initial_codes, train_labels)
        hash_loss = hash_loss_fn(benign_outputs, labels, indices).item()
    adversarial = -(adversarial_outputs * outer_codes).mean().item()
    quantisation = ((adversarial_outputs - torch.sign(adversarial_outputs)) ** 2).mean().item()

    entry = entries[0]
    assert entry["hash_loss"] == pytest.approx(hash_loss, abs=1e-5)
    assert entry["adversarial"] == pytest.approx(adversarial, abs=1e-5)
    assert entry["quantisation"] == pytest.approx(quantisation, abs=1e-5)
    # lambda = 1 and mu = 0: the quantisation term is reported but not added.
    assert entry["loss"] == pytest.approx(hash_loss + adversarial, abs=1e-5)
    assert quantisation > 1e-3


def test_centre_code_keeps_ties() -> None:
    # 4 rows of class 0 and 12 of class 1. Bit 0 is +1 everywhere: centre vote
    # 4/4 - 12/12 = 0, which zero_bits="keep" leaves at 0. Bit 1 is +1 on class 0
    # and -1 on class 1: vote 1 - (-1) = 2, so +1.
    bank_labels = torch.zeros(16, 2)
    bank_labels[:4, 0] = 1
    bank_labels[4:, 1] = 1
    bank = torch.ones(16, 2)
    bank[4:, 1] = -1

    codes = center_codes(torch.tensor([[1.0, 0.0]]), bank, bank_labels, zero_bits="keep")

    assert codes.tolist() == [[0.0, 1.0]]


def test_bank_binary_after_training() -> None:
    defense = CgAT(epochs=2, batch_size=8)
    defense.train(make_model(), make_image_set())

    assert defense.bank.shape == (N_IMAGES, N_BITS)
    assert bool(((defense.bank == 1) | (defense.bank == -1)).all())
    assert defense.code_bank() is defense.bank


def test_fixed_weights() -> None:
    defense = CgAT()

    assert defense.lambda_ == 1.0
    assert defense.mu == 0.0


def test_config_records_settings() -> None:
    defense = DEFENSES.create("cgat", epochs=3, inner_mode="eval", bank="reference_alias")
    config = defense.config()

    assert config["defense"] == "cgat"
    assert config["epochs"] == 3
    assert config["inner_mode"] == "eval"
    assert config["bank"] == "reference_alias"
    assert json.loads(json.dumps(config)) == config


def test_config_defaults() -> None:
    config = CgAT().config()

    assert config["epochs"] == 30
    assert config["lr"] == 0.01
    assert config["momentum"] == 0.9
    assert config["weight_decay"] == 5e-4
    assert config["bank"] == "binary"
