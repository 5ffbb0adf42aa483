"""Tests of SAAT's code bank, loss terms, resume and settings on a 16-image set.

The model is an untrained 16-bit DPH small CNN on 16x16 grey images, so each
``train`` call takes well under a second on one CPU thread.
"""

from __future__ import annotations

import copy
import io
import json
from typing import Any

import pytest
import torch

import defenses._base
import defenses.saat
from attacks._codes import tie_break_vector
from defenses import DEFENSES
from defenses.saat import SAAT
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


def mainstay_by_hand(labels: torch.Tensor, bank: torch.Tensor, bank_labels: torch.Tensor) -> torch.Tensor:
    """Compute SAAT's mainstay code: sign of the cosine-weighted positive mean minus the negative mean.

    Positive weights are ``<l, y_j> / (|l| |y_j| + 1e-8)`` normalised to sum 1;
    every row that shares no class gets the same negative weight. A tied vote
    takes the bit of the seed-0 tie-break vector. Rounding leaves a tie a few
    float32 ulps from zero, so votes within 1e-6 of zero count as ties.
    """
    overlap = labels @ bank_labels.T
    norms = labels.norm(dim=1, keepdim=True) * bank_labels.norm(dim=1).unsqueeze(0)
    cosine = overlap / (norms + 1e-8)
    positive_weights = cosine / cosine.sum(dim=1, keepdim=True)
    negative = (overlap == 0).to(torch.float32)
    negative_weights = negative / negative.sum(dim=1, keepdim=True)
    votes = positive_weights @ bank - negative_weights @ bank
    fill = tie_break_vector(bank.shape[1], 0).expand_as(votes)
    signs = torch.sign(votes)
    return torch.where(votes.abs() <= 1e-6, fill, signs)


def all_images(image_set: TensorImageSet) -> torch.Tensor:
    return image_set.images(torch.arange(len(image_set)))


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


def record_steps(monkeypatch: pytest.MonkeyPatch, defense: SAAT) -> list[dict[str, Any]]:
    """Wrap ``defense._step`` to record the model, bank, lr and iteration before each step and the bank after."""
    records = []
    real_step = defense._step

    def step_and_record(model, images, labels, indices, generator):
        record = {
            "model": copy.deepcopy(model),
            "bank_before": defense.bank.clone(),
            "lr": defense.optimizer.param_groups[0]["lr"],
            "iteration": defense.iteration,
            "images": images,
            "indices": indices,
        }
        terms = real_step(model, images, labels, indices, generator)
        record["bank_after"] = defense.bank.clone()
        records.append(record)
        return terms

    monkeypatch.setattr(defense, "_step", step_and_record)
    return records


def is_binary(codes: torch.Tensor) -> bool:
    return bool(((codes == 1) | (codes == -1)).all())


# -- the code bank -------------------------------------------------------------
def test_bank_binary_after_training() -> None:
    defense = SAAT(epochs=2, batch_size=8)
    defense.train(make_model(), make_image_set())

    assert defense.bank.shape == (N_IMAGES, N_BITS)
    assert is_binary(defense.bank)


def test_bank_rows_follow_dataset_index(monkeypatch: pytest.MonkeyPatch) -> None:
    defense = SAAT(epochs=1, batch_size=8)
    records = record_steps(monkeypatch, defense)
    defense.train(make_model(), make_image_set())
    first = records[0]
    indices = first["indices"]
    outside = torch.ones(N_IMAGES, dtype=torch.bool)
    outside[indices] = False

    # The step's benign forward runs in train mode, where BatchNorm uses the
    # batch statistics, so a train-mode copy taken before the step reproduces it.
    reference = first["model"].train()
    with torch.no_grad():
        expected = binarize(reference(first["images"]))

    assert len(records) == 2
    assert torch.equal(first["bank_after"][indices], expected)
    assert torch.equal(first["bank_after"][outside], first["bank_before"][outside])
    assert not torch.equal(indices.sort().values, torch.arange(8))  # the batch is shuffled


def test_binary_bank_guides_mainstay(monkeypatch: pytest.MonkeyPatch) -> None:
    banks = []
    real_mainstay = defenses.saat.mainstay_codes

    def mainstay_and_record(labels, bank_codes, bank_labels, **kwargs):
        banks.append(bank_codes)
        return real_mainstay(labels, bank_codes, bank_labels, **kwargs)

    monkeypatch.setattr(defenses.saat, "mainstay_codes", mainstay_and_record)
    defense = SAAT(epochs=1, batch_size=8, bank="binary")
    defense.train(make_model(), make_image_set())

    # Two steps, each computing the guide code before the inner attack and again for the outer loss.
    assert len(banks) == 4
    assert all(bank is defense.bank for bank in banks)
    assert defense.code_bank() is defense.bank


def test_reference_alias_uses_loss_buffer(monkeypatch: pytest.MonkeyPatch) -> None:
    banks = []
    real_mainstay = defenses.saat.mainstay_codes

    def mainstay_and_record(labels, bank_codes, bank_labels, **kwargs):
        banks.append((bank_codes, bank_codes.clone()))
        return real_mainstay(labels, bank_codes, bank_labels, **kwargs)

    monkeypatch.setattr(defenses.saat, "mainstay_codes", mainstay_and_record)
    defense = SAAT(epochs=1, batch_size=8, bank="reference_alias")
    defense.train(make_model(), make_image_set())

    assert len(banks) == 4
    assert all(bank is defense.loss_fn.U for bank, _ in banks)
    assert defense.code_bank() is defense.loss_fn.U
    # The first call receives the preloaded binary codes. After the first step's
    # hash loss has written its tanh outputs into U, the bank is no longer binary.
    assert is_binary(banks[0][1])
    assert not is_binary(banks[1][1])
    assert is_binary(defense.bank)


def test_mainstay_tie_takes_tie_break_bit() -> None:
    # 4 rows of class 0 and 12 of class 1. Bit 0 is +1 everywhere, so its vote is
    # 1 - 1 = 0, a tie. Bit 1 is +1 on class 0 and -1 on class 1: vote 1 - (-1) = 2.
    bank_labels = torch.zeros(16, 2)
    bank_labels[:4, 0] = 1
    bank_labels[4:, 1] = 1
    bank = torch.ones(16, 2)
    bank[4:, 1] = -1
    tie_bit = tie_break_vector(2, 0)[0].item()

    codes = defenses.saat.mainstay_codes(torch.tensor([[1.0, 0.0]]), bank, bank_labels, zero_bits="tie-break", seed=0)

    assert tie_bit == -1.0  # so the tie-break bit differs from the rounding sign (+1)
    assert codes.tolist() == [[tie_bit, 1.0]]


# -- the loss ------------------------------------------------------------------
def test_loss_terms_match_hand(monkeypatch: pytest.MonkeyPatch) -> None:
    image_set = make_image_set()
    model = make_model()
    reference = copy.deepcopy(model)
    batches = record_batches(monkeypatch)
    entries = []
    # One batch of all 16 images, one inner step from x (no random start) in eval
    # mode, and weights other than the defaults so a swapped weight shows.
    defense = SAAT(epochs=1, batch_size=N_IMAGES, steps=1, random_start=False, inner_mode="eval",
                   lambda_=2.0, mu=0.5)
    defense.train(model, image_set, on_epoch=lambda epoch, entry, state_fn: entries.append(entry))
    images, labels, indices = batches[0]
    train_labels = image_set.labels

    reference.eval()
    with torch.no_grad():
        initial_codes = binarize(reference(all_images(image_set)))
    inner_codes = mainstay_by_hand(labels, initial_codes, train_labels)
    inputs = images.clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad((reference(inputs) * inner_codes).mean(), inputs)
    adversarial_images = (images - defense.alpha * gradient.sign()).clamp(0, 1)

    reference.train()
    with torch.no_grad():
        adversarial_outputs = reference(adversarial_images)
        benign_outputs = reference(images)
        bank = initial_codes.clone()
        bank[indices] = binarize(benign_outputs)
        outer_codes = mainstay_by_hand(labels, bank, train_labels)
        hash_loss_fn = reference.make_loss(N_IMAGES)
        hash_loss_fn.preload(initial_codes, train_labels)
        hash_loss = hash_loss_fn(benign_outputs, labels, indices).item()
    adversarial = -(adversarial_outputs * outer_codes).mean().item()
    quantisation = ((adversarial_outputs - torch.sign(adversarial_outputs)) ** 2).mean().item()
    total = hash_loss + 2.0 * adversarial + 0.5 * quantisation

    entry = entries[0]
    assert entry["hash_loss"] == pytest.approx(hash_loss, abs=1e-5)
    assert entry["adversarial"] == pytest.approx(adversarial, abs=1e-5)
    assert entry["quantisation"] == pytest.approx(quantisation, abs=1e-5)
    assert entry["loss"] == pytest.approx(total, abs=1e-5)
    assert quantisation > 1e-3  # large enough that a missing mu term shows in the total


# -- resume --------------------------------------------------------------------
class StopAfterEpoch(Exception):
    """Raised by a test callback to interrupt training after saving a state."""


def make_defense(**overrides: Any) -> SAAT:
    # Momentum makes the optimiser state part of what resume must restore.
    options = {"epochs": 2, "batch_size": 8, "momentum": 0.9, **overrides}
    return SAAT(**options)


def test_resume_matches_uninterrupted(monkeypatch: pytest.MonkeyPatch) -> None:
    image_set = make_image_set()

    uninterrupted = make_defense()
    uninterrupted_steps = record_steps(monkeypatch, uninterrupted)
    uninterrupted_model = uninterrupted.train(make_model(), image_set)

    saved = io.BytesIO()

    def save_and_stop(epoch: int, entry: dict[str, Any], state_fn) -> None:
        torch.save(state_fn(), saved)
        raise StopAfterEpoch

    with pytest.raises(StopAfterEpoch):
        make_defense().train(make_model(), image_set, on_epoch=save_and_stop)
    saved.seek(0)
    state = torch.load(saved, weights_only=True)

    resumed = make_defense()
    resumed_steps = record_steps(monkeypatch, resumed)
    resumed_epochs = []
    resumed_model = resumed.train(make_model(), image_set, resume=state,
                                  on_epoch=lambda epoch, entry, state_fn: resumed_epochs.append(epoch))

    assert state["epoch"] == 1
    assert resumed_epochs == [2]
    # 2 epochs of 2 batches: milestones at iterations int(4 * 0.5) = 2 and int(4 * 0.75) = 3,
    # so the steps run at lr 0.05, 0.05, 0.005 and 0.0005.
    assert [record["iteration"] for record in uninterrupted_steps] == [0, 1, 2, 3]
    assert [record["lr"] for record in uninterrupted_steps] == pytest.approx([0.05, 0.05, 0.005, 0.0005])
    assert [record["iteration"] for record in resumed_steps] == [2, 3]
    assert [record["lr"] for record in resumed_steps] == [record["lr"] for record in uninterrupted_steps[2:]]
    assert resumed.iteration == 4
    assert resumed.scheduler.last_epoch == uninterrupted.scheduler.last_epoch
    assert resumed.optimizer.param_groups[0]["lr"] == uninterrupted.optimizer.param_groups[0]["lr"]
    assert torch.equal(resumed.bank, uninterrupted.bank)
    assert torch.equal(resumed.loss_fn.U, uninterrupted.loss_fn.U)
    expected_weights = uninterrupted_model.state_dict()
    for name, value in resumed_model.state_dict().items():
        assert torch.equal(value, expected_weights[name]), name


# -- settings ------------------------------------------------------------------
def test_config_records_settings() -> None:
    defense = DEFENSES.create("saat", epochs=3, inner_mode="eval", bank="reference_alias", lambda_=2.0, mu=0.5)
    config = defense.config()

    assert config["defense"] == "saat"
    assert config["epochs"] == 3
    assert config["lambda"] == 2.0
    assert config["mu"] == 0.5
    assert config["inner_mode"] == "eval"
    assert config["bank"] == "reference_alias"
    assert json.loads(json.dumps(config)) == config


def test_config_defaults() -> None:
    config = SAAT().config()

    assert config["epochs"] == 20
    assert config["lr"] == 0.05
    assert config["lambda"] == 1.0
    assert config["mu"] == 1e-4
    assert config["inner_mode"] == "train"
    assert config["bank"] == "binary"
    assert config["weight_decay"] == 1e-5
    assert config["momentum"] == 0.0
