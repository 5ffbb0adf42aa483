"""Tests of the SDHA attacks on a tiny DPH model trained for a few seconds."""

from __future__ import annotations

import logging
import math

import pytest
import torch

from attacks import ATTACKS, VictimKnowledge
from attacks.sdha import SDHA, TargetedSDHA, reference_sets, sdha_distances, sdha_hash_term, sdha_weights
from models import MODELS
from models.base import HashingModel
from models.errors import DataError, UnsupportedPairingError
from models.imageset import TensorImageSet
from models.training import TrainConfig, encode_images, train_model

EPS = 8 / 255

# Two continuous codes and four reference codes. Rows 0 and 3 of CODES are sign(OUTPUTS[0]) and sign(OUTPUTS[1]).
OUTPUTS = torch.tensor([[0.3, -0.7, 0.05], [-0.2, 0.9, -0.6]])
CODES = torch.tensor([[1.0, -1.0, 1.0], [-1.0, 1.0, 1.0], [1.0, 1.0, 1.0], [-1.0, 1.0, -1.0]])


def sigmoid(value: float) -> float:
    return 1 / (1 + math.exp(-value))


def direct_distance(query: list[float], code: list[float], *, sigma: float, targeted: bool) -> float:
    """Compute SDHA's dis(q, r) bit by bit from its definition."""
    total = 0.0
    for q, r in zip(query, code):
        if targeted:
            total += 0.5 * abs(q - r) * sigmoid(-sigma * q * r)
        else:
            gate = sigmoid(sigma * q * r)
            total += 0.5 * abs(q - r) * gate + (1 - gate)
    return total


def direct_weight(query: list[float], code: list[float], *, z: float) -> float:
    hamming = sum(1 for q, r in zip(query, code) if (1.0 if q >= 0 else -1.0) != r)
    return (hamming + 1e-8) ** -z


def direct_hash_term(mask: list[list[int]], *, sigma: float, z: float, targeted: bool) -> float:
    """Compute S with Python loops: the batch mean of each query's weighted mean distance."""
    total = 0.0
    for i, row in enumerate(mask):
        members = [j for j, member in enumerate(row) if member]
        if not members:
            continue
        query = OUTPUTS[i].tolist()
        total += sum(
            direct_weight(query, CODES[j].tolist(), z=z)
            * direct_distance(query, CODES[j].tolist(), sigma=sigma, targeted=targeted)
            for j in members
        ) / len(members)
    value = total / len(mask)
    return value if targeted else -value


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


@pytest.fixture(scope="module")
def knowledge(model: HashingModel, data: tuple[torch.Tensor, torch.Tensor]) -> VictimKnowledge:
    images, labels = data
    pixels = (images * 255).round().to(torch.uint8)
    codes = encode_images(model, TensorImageSet(pixels, labels))
    return VictimKnowledge(train_codes=codes, train_labels=labels)


@pytest.fixture(scope="module")
def knowledge_without_class_3(knowledge: VictimKnowledge) -> VictimKnowledge:
    keep = knowledge.train_labels[:, 3] == 0
    return VictimKnowledge(train_codes=knowledge.train_codes[keep], train_labels=knowledge.train_labels[keep])


def one_hot(*classes: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(classes), 4).to(torch.float32)


def mean_hamming(codes: torch.Tensor, bank: torch.Tensor) -> float:
    return float(((codes.shape[1] - codes @ bank.T) / 2).mean())


@pytest.mark.parametrize("targeted, sigma", [(False, 5.0), (True, 10.0)])
def test_distances_match_definition(targeted: bool, sigma: float) -> None:
    expected = torch.tensor([
        [direct_distance(query.tolist(), code.tolist(), sigma=sigma, targeted=targeted) for code in CODES]
        for query in OUTPUTS
    ])
    distances = sdha_distances(OUTPUTS, CODES, sigma=sigma, targeted=targeted)
    assert torch.allclose(distances, expected, atol=1e-6)


@pytest.mark.parametrize("z", [0.5, -0.3])
def test_weights_match_definition(z: float) -> None:
    expected = torch.tensor([
        [direct_weight(query.tolist(), code.tolist(), z=z) for code in CODES] for query in OUTPUTS
    ])
    weights = sdha_weights(OUTPUTS, CODES, z=z)
    assert torch.allclose(weights, expected, rtol=1e-5)


def test_weight_at_zero_distance() -> None:
    weights = sdha_weights(OUTPUTS, CODES, z=0.5)
    assert weights[0, 0] == pytest.approx(1e4, rel=1e-4)
    assert weights[1, 3] == pytest.approx(1e4, rel=1e-4)


def test_weights_carry_no_gradient() -> None:
    outputs = OUTPUTS.clone().requires_grad_(True)
    assert not sdha_weights(outputs, CODES, z=0.5).requires_grad


@pytest.mark.parametrize("targeted, sigma, z", [(False, 5.0, 0.5), (True, 10.0, -0.3)])
def test_hash_term_matches_loops(targeted: bool, sigma: float, z: float) -> None:
    mask = [[1, 1, 0, 1], [0, 1, 1, 1]]
    mask_tensor = torch.tensor(mask, dtype=torch.bool)
    value = sdha_hash_term(OUTPUTS, CODES, mask_tensor, sigma=sigma, z=z, targeted=targeted)
    assert value.item() == pytest.approx(direct_hash_term(mask, sigma=sigma, z=z, targeted=targeted), rel=1e-5)


def test_hash_term_empty_set_contributes_zero() -> None:
    mask = [[1, 0, 1, 0], [0, 0, 0, 0]]
    outputs = OUTPUTS.clone().requires_grad_(True)
    value = sdha_hash_term(outputs, CODES, torch.tensor(mask, dtype=torch.bool), sigma=10.0, z=-0.3, targeted=True)
    value.backward()
    assert torch.isfinite(value)
    # The empty row still counts in the batch size, so S is query 0's mean divided by 2.
    assert value.item() == pytest.approx(direct_hash_term(mask, sigma=10.0, z=-0.3, targeted=True), rel=1e-5)
    assert torch.equal(outputs.grad[1], torch.zeros(3))


def test_reference_sets_share_a_label() -> None:
    query_labels = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    train_labels = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    train_codes = CODES[:3]

    codes, mask = reference_sets(query_labels, train_codes, train_labels)

    assert torch.equal(codes, train_codes)
    assert mask.tolist() == [[True, False, True], [False, False, False]]


def test_reference_sets_fall_back_to_own_code() -> None:
    query_labels = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    train_labels = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    own_codes = CODES[[0, 3]]

    codes, mask = reference_sets(query_labels, CODES[:3], train_labels, own_codes)

    assert torch.equal(codes, torch.cat([CODES[:3], own_codes]))
    # Query 0 has training matches and ignores its own code. Query 1 has only its own code.
    assert mask.tolist() == [[True, False, True, False, False], [False, False, False, False, True]]


def test_reference_sets_reject_label_width() -> None:
    with pytest.raises(DataError, match="classes"):
        reference_sets(torch.ones(2, 5), CODES[:3], torch.ones(3, 4))


@pytest.mark.parametrize("name", ["sdha", "sdha-targeted"])
def test_output_bounded_and_finite(
    name: str, model: HashingModel, data: tuple[torch.Tensor, torch.Tensor], knowledge: VictimKnowledge
) -> None:
    images, labels = data[0][:8], data[1][:8]
    attack = ATTACKS.create(name, steps=10)
    attack.fit(model, knowledge)
    adversarial = attack.run(model, images, labels, labels.roll(1, dims=1)).images
    assert torch.isfinite(adversarial).all()
    assert (adversarial - images).abs().max() <= EPS + 1e-6
    assert adversarial.min() >= 0
    assert adversarial.max() <= 1


@pytest.mark.parametrize("name", ["sdha", "sdha-targeted"])
def test_same_seed_same_images(
    name: str, model: HashingModel, data: tuple[torch.Tensor, torch.Tensor], knowledge: VictimKnowledge
) -> None:
    images, labels = data[0][:4], data[1][:4]
    outputs = []
    for seed in (3, 3, 4):
        attack = ATTACKS.create(name, steps=5, random_start=True, seed=seed)
        attack.fit(model, knowledge)
        outputs.append(attack.run(model, images, labels, labels.roll(1, dims=1)).images)
    assert torch.equal(outputs[0], outputs[1])
    assert not torch.equal(outputs[0], outputs[2])


def test_no_theory_codes(
    model: HashingModel, data: tuple[torch.Tensor, torch.Tensor], knowledge: VictimKnowledge
) -> None:
    attack = SDHA(steps=1)
    attack.fit(model, knowledge)
    assert attack.run(model, data[0][:2], data[1][:2]).theory_codes is None


def test_nontargeted_moves_away_from_own_class(
    model: HashingModel, data: tuple[torch.Tensor, torch.Tensor], knowledge: VictimKnowledge
) -> None:
    images, labels = data[0][:4], data[1][:4]
    own_class = knowledge.train_codes[knowledge.train_labels[:, 0] == 1]
    queries = images[labels[:, 0] == 1]
    attack = SDHA(steps=20)
    attack.fit(model, knowledge)

    adversarial = attack.run(model, queries, one_hot(*[0] * len(queries))).images

    before = mean_hamming(model.encode(queries), own_class)
    after = mean_hamming(model.encode(adversarial), own_class)
    assert after > before


def test_targeted_moves_towards_target_class(
    model: HashingModel, data: tuple[torch.Tensor, torch.Tensor], knowledge: VictimKnowledge
) -> None:
    images, labels = data
    queries = images[labels[:, 0] == 1][:4]
    target_class = knowledge.train_codes[knowledge.train_labels[:, 2] == 1]
    attack = TargetedSDHA(steps=20)
    attack.fit(model, knowledge)

    adversarial = attack.run(model, queries, one_hot(*[0] * 4), one_hot(*[2] * 4)).images

    before = mean_hamming(model.encode(queries), target_class)
    after = mean_hamming(model.encode(adversarial), target_class)
    assert after < before


def test_targeted_empty_set_keeps_clean_image(
    model: HashingModel,
    data: tuple[torch.Tensor, torch.Tensor],
    knowledge_without_class_3: VictimKnowledge,
    caplog: pytest.LogCaptureFixture,
) -> None:
    images = data[0][:2]
    attack = TargetedSDHA(steps=10)
    attack.fit(model, knowledge_without_class_3)

    with caplog.at_level(logging.WARNING, logger="attacks.sdha"):
        adversarial = attack.run(model, images, one_hot(0, 1), one_hot(3, 2)).images

    # No training code has class 3, so query 0 keeps its clean image. Query 1 (target class 2) moves.
    assert torch.equal(adversarial[0], images[0])
    assert not torch.equal(adversarial[1], images[1])
    assert "1 of 2 queries" in caplog.text


def test_nontargeted_empty_set_uses_own_code(
    model: HashingModel,
    data: tuple[torch.Tensor, torch.Tensor],
    knowledge_without_class_3: VictimKnowledge,
    caplog: pytest.LogCaptureFixture,
) -> None:
    images = data[0][3:4]
    attack = SDHA(steps=10)
    attack.fit(model, knowledge_without_class_3)

    with caplog.at_level(logging.WARNING, logger="attacks.sdha"):
        adversarial = attack.run(model, images, one_hot(3)).images

    assert not torch.equal(adversarial, images)
    assert torch.isfinite(adversarial).all()
    assert caplog.text == ""


def test_fit_needs_binary_train_codes(model: HashingModel, knowledge: VictimKnowledge) -> None:
    with pytest.raises(UnsupportedPairingError):
        SDHA().fit(model, VictimKnowledge())
    continuous = VictimKnowledge(train_codes=knowledge.train_codes * 0.5, train_labels=knowledge.train_labels)
    with pytest.raises(DataError, match="-1 and \\+1"):
        SDHA().fit(model, continuous)


def test_registered_defaults() -> None:
    nontargeted = ATTACKS.create("sdha")
    targeted = ATTACKS.create("sdha-targeted")
    assert isinstance(nontargeted, SDHA)
    assert isinstance(targeted, TargetedSDHA)
    assert nontargeted.capabilities.label_aware
    assert nontargeted.capabilities.needs_train_codes
    assert targeted.capabilities.targeted
    assert targeted.capabilities.needs_train_codes
    assert (nontargeted.sigma, nontargeted.z) == (5.0, 0.5)
    assert (targeted.sigma, targeted.z) == (10.0, -0.3)
    config = targeted.config()
    assert config["steps"] == 1500
    assert config["lr"] == 0.01
    assert config["betas"] == [0.9, 0.999]
    assert config["hash_weight"] == 25.0
    assert config["random_start"] is False
