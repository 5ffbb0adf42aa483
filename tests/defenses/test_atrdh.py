"""Tests of ATRDH's loss, banks, resume and settings on a 16-image set.

The PrototypeNet is shrunk to 32 hidden and 16 feature units so a run takes
well under a second on one CPU thread.
"""

from __future__ import annotations

import copy
import io
import json
from typing import Any

import pytest
import torch

import defenses._base
from defenses import DEFENSES
from defenses.atrdh import ATRDH
from models import MODELS
from models.base import HashingModel
from models.codes import binarize
from models.imageset import TensorImageSet

N_IMAGES = 16
N_BITS = 16
SMALL_PROTOTYPE_NET = {"hidden_size": 32, "feature_size": 16}


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


def make_model(name: str = "dph") -> HashingModel:
    return MODELS.create(name, n_bits=N_BITS, n_classes=4, in_channels=1, image_size=16)


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


def record_adversarial_images(monkeypatch: pytest.MonkeyPatch, defense: ATRDH) -> list[torch.Tensor]:
    """Make ``defense.inner_attack`` append each batch of adversarial images it returns to the returned list."""
    outputs = []
    real_attack = defense.inner_attack

    def attack_and_record(*args: Any, **kwargs: Any) -> torch.Tensor:
        adversarial = real_attack(*args, **kwargs)
        outputs.append(adversarial)
        return adversarial

    monkeypatch.setattr(defense, "inner_attack", attack_and_record)
    return outputs


def record_steps(monkeypatch: pytest.MonkeyPatch, defense: ATRDH) -> list[tuple[int, float]]:
    """Make ``defense._step`` append (iteration, lr) before each step to the returned list."""
    records = []
    real_step = defense._step

    def step_and_record(*args: Any) -> dict[str, float]:
        records.append((defense.iteration, defense.optimizer.param_groups[0]["lr"]))
        return real_step(*args)

    monkeypatch.setattr(defense, "_step", step_and_record)
    return records


def test_loss_terms_match_hand(monkeypatch: pytest.MonkeyPatch) -> None:
    image_set = make_image_set()
    # A DPSH victim, so the hash loss differs from the DPH-form adversarial term.
    model = make_model("dpsh")
    reference = copy.deepcopy(model)
    batches = record_batches(monkeypatch)
    entries = []
    # adversarial_weight 2 instead of the default 1, so a missing weight shows in the total.
    defense = ATRDH(epochs=1, batch_size=N_IMAGES, steps=2, adversarial_weight=2.0, **SMALL_PROTOTYPE_NET)
    adversarial_batches = record_adversarial_images(monkeypatch, defense)
    defense.train(model, image_set, on_epoch=lambda epoch, entry, state_fn: entries.append(entry))
    images, labels, indices = batches[0]
    train_labels = image_set.labels

    reference.eval()
    with torch.no_grad():
        initial_codes = binarize(reference(image_set.images(torch.arange(N_IMAGES))))
        # Both forward passes of the step run in train mode with the weights from before the update.
        reference.train()
        benign_outputs = reference(images)
        adversarial_outputs = reference(adversarial_batches[0])
        hash_loss_fn = reference.make_loss(N_IMAGES)
        hash_loss_fn.preload(initial_codes, train_labels)
        hash_loss = hash_loss_fn(benign_outputs, labels, indices).item()
    continuous_bank = initial_codes.clone()
    continuous_bank[indices] = benign_outputs
    signed_similarity = torch.where(labels @ train_labels.T > 0, 1.0, -1.0)
    inner_products = adversarial_outputs @ continuous_bank.T / N_BITS
    adversarial = ((inner_products - signed_similarity) ** 2).mean().item()

    entry = entries[0]
    assert not torch.equal(adversarial_batches[0], images)
    assert entry["hash_loss"] == pytest.approx(hash_loss, abs=1e-5)
    assert entry["adversarial"] == pytest.approx(adversarial, abs=1e-5)
    assert entry["loss"] == pytest.approx(hash_loss + 2.0 * adversarial, abs=1e-5)
    assert abs(adversarial - hash_loss) > 1e-3  # a swapped term would show


def test_banks_after_step(monkeypatch: pytest.MonkeyPatch) -> None:
    image_set = make_image_set()
    model = make_model()
    reference = copy.deepcopy(model)
    batches = record_batches(monkeypatch)
    defense = ATRDH(epochs=1, batch_size=8, **SMALL_PROTOTYPE_NET)
    snapshots = []

    def snapshot_and_step(real_step):
        def step(model, images, labels, indices, generator):
            snapshots.append((copy.deepcopy(model), defense.bank.clone(), defense.benign_outputs.clone()))
            return real_step(model, images, labels, indices, generator)
        return step

    monkeypatch.setattr(defense, "_step", snapshot_and_step(defense._step))
    defense.train(model, image_set)
    first_model, _, _ = snapshots[0]
    _, bank_after_first, outputs_after_first = snapshots[1]
    images, _, indices = batches[0]
    outside = torch.ones(N_IMAGES, dtype=torch.bool)
    outside[indices] = False

    with torch.no_grad():
        expected = first_model.train()(images)
        reference.eval()
        initial_codes = binarize(reference(image_set.images(torch.arange(N_IMAGES))))

    assert torch.equal(bank_after_first[indices], binarize(expected))
    assert torch.equal(bank_after_first[outside], initial_codes[outside])
    assert torch.equal(outputs_after_first[indices], expected)
    assert torch.equal(outputs_after_first[outside], initial_codes[outside])
    assert bool(((defense.bank == 1) | (defense.bank == -1)).all())


class StopAfterEpoch(Exception):
    """Raised by a test callback to interrupt training after saving a state."""


def test_resume_matches_uninterrupted(monkeypatch: pytest.MonkeyPatch) -> None:
    image_set = make_image_set()
    options = {"epochs": 2, "batch_size": 8, **SMALL_PROTOTYPE_NET}

    uninterrupted = ATRDH(**options)
    uninterrupted_steps = record_steps(monkeypatch, uninterrupted)
    uninterrupted_model = uninterrupted.train(make_model(), image_set)

    saved = io.BytesIO()

    def save_and_stop(epoch: int, entry: dict[str, Any], state_fn) -> None:
        torch.save(state_fn(), saved)
        raise StopAfterEpoch

    with pytest.raises(StopAfterEpoch):
        ATRDH(**options).train(make_model(), image_set, on_epoch=save_and_stop)
    saved.seek(0)
    state = torch.load(saved, weights_only=True)

    resumed = ATRDH(**options)
    resumed_steps = record_steps(monkeypatch, resumed)
    resumed_model = resumed.train(make_model(), image_set, resume=state)

    # Milestones at iterations int(4 * 0.5) = 2 and int(4 * 0.75) = 3 of 4: lr 1e-4, 1e-4, 1e-5, 1e-6.
    assert [lr for _, lr in uninterrupted_steps] == pytest.approx([1e-4, 1e-4, 1e-5, 1e-6])
    assert resumed_steps == uninterrupted_steps[2:]
    assert resumed.iteration == 4
    assert resumed.prototype_trainer.scheduler.last_epoch == uninterrupted.prototype_trainer.scheduler.last_epoch
    assert torch.equal(resumed.benign_outputs, uninterrupted.benign_outputs)
    expected_weights = uninterrupted_model.state_dict()
    for name, value in resumed_model.state_dict().items():
        assert torch.equal(value, expected_weights[name]), name
    expected_prototype_weights = uninterrupted.prototype_net.state_dict()
    for name, value in resumed.prototype_net.state_dict().items():
        assert torch.equal(value, expected_prototype_weights[name]), name


def test_config_records_settings() -> None:
    defense = DEFENSES.create("atrdh", epochs=3, inner_mode="eval", adversarial_weight=2.0, **SMALL_PROTOTYPE_NET)
    config = defense.config()

    assert config["defense"] == "atrdh"
    assert config["epochs"] == 3
    assert config["inner_mode"] == "eval"
    assert config["adversarial_weight"] == 2.0
    assert config["hidden_size"] == 32
    assert config["feature_size"] == 16
    assert json.loads(json.dumps(config)) == config


def test_config_defaults() -> None:
    config = ATRDH().config()

    assert config["epochs"] == 100
    assert config["lr"] == 1e-4
    assert config["adversarial_weight"] == 1.0
    assert config["hidden_size"] == 4096
    assert config["feature_size"] == 512
