"""PrototypeNet losses against hand computations, and its training loop."""

from __future__ import annotations

import math

import pytest
import torch

from attacks._prototype import (
    PrototypeNet,
    PrototypeTrainer,
    circle_prototype_loss,
    prosgan_prototype_loss,
    prototype_loss,
    sample_target_labels,
    seeded_init,
    train_prototype_net,
)
from models.codes import binarize
from models.errors import ConfigError, DataError


def _sign(value: float) -> float:
    return (value > 0) - (value < 0)


def _quantization(prototypes: list[list[float]]) -> float:
    total = sum((_sign(value) - value) ** 2 for row in prototypes for value in row)
    return total / (1e4 * len(prototypes))


def _inner(left: list[float], right: list[float]) -> float:
    return sum(a * b for a, b in zip(left, right))


def hand_circle_loss(prototypes, labels, codes, code_labels, *, softplus: bool, triu: bool) -> float:
    """Circle loss written pair by pair with Python floats."""
    n_bits = len(prototypes[0])
    positives, negatives = [], []
    for i, (prototype, label) in enumerate(zip(prototypes, labels)):
        for j, (code, code_label) in enumerate(zip(codes, code_labels)):
            if triu and j <= i:
                continue
            similarity = _inner(prototype, code) / n_bits
            (positives if _inner(label, code_label) > 0 else negatives).append(similarity)
    circle = 0.0
    if negatives:
        circle += math.log(sum(math.exp(max(0.0, s + 2) * s) for s in negatives))
    if positives:
        circle += math.log(sum(math.exp(-max(0.0, 2 - s) * s) for s in positives))
    if softplus:
        circle = math.log1p(math.exp(circle))
    return circle / len(prototypes) + _quantization(prototypes)


def hand_prosgan_loss(prototypes, scores, labels, codes, code_labels) -> float:
    """ProS-GAN prototype loss written pair by pair with Python floats."""
    n, n_codes = len(prototypes), len(codes)
    likelihood = 0.0
    for prototype, label in zip(prototypes, labels):
        for code, code_label in zip(codes, code_labels):
            theta = _inner(prototype, code) / 2
            similar = 1.0 if _inner(label, code_label) > 0 else 0.0
            likelihood += similar * theta - math.log1p(math.exp(theta))
    squared_errors = [(s - t) ** 2 for score_row, label in zip(scores, labels) for s, t in zip(score_row, label)]
    mse = sum(squared_errors) / len(squared_errors)
    return -likelihood / (n * n_codes) + mse + _quantization(prototypes)


def tiny_bank(seed: int = 0, n: int = 3, n_codes: int = 5, n_bits: int = 4, n_classes: int = 3):
    generator = torch.Generator().manual_seed(seed)
    prototypes = torch.tanh(torch.randn(n, n_bits, generator=generator))
    codes = binarize(torch.randn(n_codes, n_bits, generator=generator))
    labels = (torch.rand(n, n_classes, generator=generator) > 0.5).float()
    labels[:, 0] = 1  # every query label is non-zero
    code_labels = torch.eye(n_classes)[torch.arange(n_codes) % n_classes]
    return prototypes, labels, codes, code_labels


@pytest.mark.parametrize("softplus", [True, False])
@pytest.mark.parametrize("triu", [False, True])
def test_circle_loss_matches_hand_computation(softplus: bool, triu: bool) -> None:
    prototypes, labels, codes, code_labels = tiny_bank()
    loss = circle_prototype_loss(prototypes, labels, codes, code_labels, softplus=softplus, triu_parity=triu)
    expected = hand_circle_loss(prototypes.tolist(), labels.tolist(), codes.tolist(), code_labels.tolist(),
                                softplus=softplus, triu=triu)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_circle_loss_triu_drops_pairs() -> None:
    prototypes, labels, codes, code_labels = tiny_bank()
    all_pairs = circle_prototype_loss(prototypes, labels, codes, code_labels)
    upper = circle_prototype_loss(prototypes, labels, codes, code_labels, triu_parity=True)
    assert all_pairs.item() != pytest.approx(upper.item())


def test_circle_loss_gradient_treats_weights_as_constants() -> None:
    prototypes, labels, codes, code_labels = tiny_bank(seed=1)
    leaf = prototypes.clone().requires_grad_(True)
    circle_prototype_loss(leaf, labels, codes, code_labels, softplus=False).backward()

    # Same loss with the pair weights frozen as Python floats.
    reference = prototypes.clone().requires_grad_(True)
    similarity = reference @ codes.T / codes.shape[1]
    positive = (labels @ code_labels.T > 0).tolist()
    negative_terms, positive_terms = [], []
    for i in range(similarity.shape[0]):
        for j in range(similarity.shape[1]):
            value = float(similarity[i, j].detach())
            if positive[i][j]:
                positive_terms.append(-max(0.0, 2 - value) * similarity[i, j])
            else:
                negative_terms.append(max(0.0, value + 2) * similarity[i, j])
    circle = torch.logsumexp(torch.stack(negative_terms), 0) + torch.logsumexp(torch.stack(positive_terms), 0)
    quantization = ((torch.sign(reference) - reference) ** 2).sum() / (1e4 * reference.shape[0])
    (circle / reference.shape[0] + quantization).backward()

    torch.testing.assert_close(leaf.grad, reference.grad)


def test_circle_loss_without_negatives_uses_positive_term() -> None:
    prototypes, _, codes, _ = tiny_bank(seed=2)
    labels = torch.ones(prototypes.shape[0], 3)
    code_labels = torch.ones(codes.shape[0], 3)
    leaf = prototypes.clone().requires_grad_(True)
    loss = circle_prototype_loss(leaf, labels, codes, code_labels, softplus=False)
    loss.backward()
    expected = hand_circle_loss(prototypes.tolist(), labels.tolist(), codes.tolist(), code_labels.tolist(),
                                softplus=False, triu=False)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert torch.isfinite(leaf.grad).all()


def test_circle_loss_without_any_pair_is_finite() -> None:
    # triu(diagonal=1) on a 2 x 1 matrix keeps no pair at all.
    prototypes, labels, codes, code_labels = tiny_bank(n=2, n_codes=1)
    leaf = prototypes.clone().requires_grad_(True)
    loss = circle_prototype_loss(leaf, labels, codes, code_labels, softplus=True, triu_parity=True)
    loss.backward()
    expected = math.log(2) / 2 + _quantization(prototypes.tolist())
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert torch.isfinite(leaf.grad).all()


def test_prosgan_loss_matches_hand_computation() -> None:
    prototypes, labels, codes, code_labels = tiny_bank(seed=3)
    scores = torch.sigmoid(torch.randn(labels.shape, generator=torch.Generator().manual_seed(4)))
    loss = prosgan_prototype_loss(prototypes, scores, labels, codes, code_labels)
    expected = hand_prosgan_loss(prototypes.tolist(), scores.tolist(), labels.tolist(), codes.tolist(),
                                 code_labels.tolist())
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_prosgan_loss_needs_classifier_head() -> None:
    net = PrototypeNet(3, 4, hidden_size=8, feature_size=4)
    _, labels, codes, code_labels = tiny_bank()
    with pytest.raises(ConfigError, match="classifier=True"):
        prototype_loss(net(labels), labels, codes, code_labels, loss="prosgan")
    with pytest.raises(ConfigError, match="classifier=True"):
        PrototypeTrainer(net, total_steps=10, loss="prosgan")


def test_loss_rejects_mismatched_bank() -> None:
    prototypes, labels, codes, code_labels = tiny_bank()
    with pytest.raises(DataError, match="bits"):
        circle_prototype_loss(prototypes, labels, codes[:, :3], code_labels)
    with pytest.raises(DataError, match="rows"):
        circle_prototype_loss(prototypes, labels, codes, code_labels[:2])


def toy_bank(n_classes: int = 4, n_bits: int = 16, per_class: int = 20):
    """Codes of each class scattered around one class code, two random bits flipped per row."""
    generator = torch.Generator().manual_seed(5)
    class_codes = binarize(torch.randn(n_classes, n_bits, generator=generator))
    labels = torch.eye(n_classes).repeat_interleave(per_class, dim=0)
    codes = class_codes.repeat_interleave(per_class, dim=0)
    for row in range(codes.shape[0]):
        flipped = torch.randperm(n_bits, generator=generator)[:2]
        codes[row, flipped] *= -1
    return class_codes, codes, labels


def hamming(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    return (left.shape[1] - left @ right.T) / 2


@pytest.mark.parametrize("loss", ["circle", "prosgan"])
def test_training_moves_prototypes_to_class_codes(loss: str) -> None:
    class_codes, codes, labels = toy_bank()
    candidates = torch.eye(4)
    with seeded_init(0):
        net = PrototypeNet(4, 16, hidden_size=64, feature_size=32, classifier=loss == "prosgan")
    with torch.no_grad():
        before = hamming(binarize(net(candidates).prototypes), class_codes)

    losses = train_prototype_net(net, codes, labels, candidates, steps=150, batch_size=16, lr=1e-2,
                                 loss=loss, generator=torch.Generator().manual_seed(0))

    with torch.no_grad():
        after = hamming(binarize(net(candidates).prototypes), class_codes)
    assert len(losses) == 150
    assert sum(losses[-20:]) < sum(losses[:20])
    # The optimum also moves away from the other classes' codes, so it need
    # not equal the class code exactly; it must be closest to it.
    own_before, own_after = before.diagonal(), after.diagonal()
    assert own_after.sum() < own_before.sum()
    others = after + torch.eye(4) * 1e3
    assert (own_after < others.min(dim=1).values).all(), after
    assert not net.training


def test_trainer_learning_rate_milestones() -> None:
    _, codes, labels = toy_bank()
    net = PrototypeNet(4, 16, hidden_size=8, feature_size=4)
    trainer = PrototypeTrainer(net, total_steps=8, lr=1e-4)
    rates = []
    for _ in range(8):
        rates.append(trainer.optimizer.param_groups[0]["lr"])
        step = trainer.step(torch.eye(4), codes, labels)
    assert rates == pytest.approx([1e-4] * 4 + [1e-5] * 2 + [1e-6] * 2)
    assert step.prototypes.shape == (4, 16)
    assert not step.prototypes.requires_grad


def test_seeded_init_repeats_and_restores_global_rng() -> None:
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    with seeded_init(7):
        first = PrototypeNet(3, 8, hidden_size=16, feature_size=8)
    after = torch.rand(1)
    with seeded_init(7):
        second = PrototypeNet(3, 8, hidden_size=16, feature_size=8)
    for left, right in zip(first.state_dict().values(), second.state_dict().values()):
        assert torch.equal(left, right)
    assert torch.equal(after, expected_next)


def test_from_state_dict_rebuilds_sizes() -> None:
    net = PrototypeNet(3, 8, hidden_size=16, feature_size=6, classifier=True)
    copy = PrototypeNet.from_state_dict(net.state_dict())
    assert copy.config() == net.config()
    labels = torch.eye(3)
    torch.testing.assert_close(copy(labels).prototypes, net(labels).prototypes)


def test_sample_target_labels_rejects_empty_candidates() -> None:
    with pytest.raises(DataError, match="no target-label candidates"):
        sample_target_labels(torch.empty(0, 3), 4, torch.Generator())


def test_sample_target_labels_draws_candidate_rows() -> None:
    candidates = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    drawn = sample_target_labels(candidates, 50, torch.Generator().manual_seed(0))
    assert drawn.shape == (50, 2)
    assert all(any(torch.equal(row, candidate) for candidate in candidates) for row in drawn)
