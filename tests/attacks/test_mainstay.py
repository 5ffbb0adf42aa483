"""Tests of the mainstay-code attacks: the masked margin loss and the theory-code signs."""

from __future__ import annotations

import copy

import pytest
import torch

from attacks import ATTACKS, VictimKnowledge
from attacks._codes import mainstay_codes
from attacks.mainstay import masked_margin_loss
from models.errors import ConfigError
from models.training import encode_images

OUTPUTS = torch.tensor([[0.8, -0.2, 0.1], [-0.9, 0.6, -0.4]])
CODES = torch.tensor([[1.0, 1.0, -1.0], [1.0, -1.0, -1.0]])


def test_margin_loss_nontargeted_by_hand() -> None:
    # s = h * c = (0.8, -0.2, -0.1), (-0.9, -0.6, 0.4). Mask s > -0.5 keeps 4 entries:
    # (s + 2) s = 0.8 * 2.8 - 0.2 * 1.8 - 0.1 * 1.9 + 0.4 * 2.4 = 2.24 - 0.36 - 0.19 + 0.96 = 2.65,
    # and 2.65 / 4 = 0.6625.
    assert masked_margin_loss(OUTPUTS, CODES, targeted=False).item() == pytest.approx(0.6625, abs=1e-6)


def test_margin_loss_targeted_by_hand() -> None:
    # Mask s < 0.5 keeps 5 entries: -0.36 - 0.19 - 0.9 * 1.1 - 0.6 * 1.4 + 0.96
    # = -0.36 - 0.19 - 0.99 - 0.84 + 0.96 = -1.42, and -(-1.42 / 5) = 0.284.
    assert masked_margin_loss(OUTPUTS, CODES, targeted=True).item() == pytest.approx(0.284, abs=1e-6)


def test_margin_loss_boundary_excluded() -> None:
    # s = -0.5 is not above -0.5, so only the second bit (s = 0.25) counts: 0.25 * 2.25 / 1 = 0.5625.
    outputs = torch.tensor([[-0.5, 0.25]])
    codes = torch.tensor([[1.0, 1.0]])

    assert masked_margin_loss(outputs, codes, targeted=False).item() == pytest.approx(0.5625, abs=1e-6)


@pytest.mark.parametrize(("targeted", "outputs"), [(False, [[-0.9, 0.7]]), (True, [[0.9, -0.7]])])
def test_margin_loss_empty_mask_zero(targeted: bool, outputs: list[list[float]]) -> None:
    # Codes (1, -1): s = (-0.9, -0.7) are all <= -0.5, and s = (0.9, 0.7) are all >= 0.5.
    outputs_tensor = torch.tensor(outputs, requires_grad=True)

    loss = masked_margin_loss(outputs_tensor, torch.tensor([[1.0, -1.0]]), targeted=targeted)
    loss.backward()

    assert loss.item() == 0.0
    assert torch.equal(outputs_tensor.grad, torch.zeros(1, 2))


def test_margin_loss_gradient_by_hand() -> None:
    outputs = torch.tensor([[0.3, -0.2]], requires_grad=True)
    codes = torch.tensor([[1.0, 1.0]])

    masked_margin_loss(outputs, codes, targeted=False).backward()

    # Both bits kept (count 2): d/dh_k [(h_k c_k + 2) h_k c_k / 2] = (2 h_k c_k + 2) c_k / 2 = h_k + 1.
    assert torch.allclose(outputs.grad, torch.tensor([[1.3, 0.8]]), atol=1e-6)


@pytest.fixture
def knowledge(trained_victim, toy_image_set) -> VictimKnowledge:
    codes = encode_images(trained_victim, toy_image_set)
    return VictimKnowledge(train_codes=codes, train_labels=toy_image_set.labels)


def test_theory_codes_nontargeted_flip(trained_victim, knowledge, tiny_images, one_hot_labels) -> None:
    attack = ATTACKS.create("mainstay", steps=0, seed=2)
    attack.fit(trained_victim, knowledge)

    output = attack.run(trained_victim, tiny_images, one_hot_labels)

    expected = mainstay_codes(one_hot_labels, knowledge.train_codes, knowledge.train_labels, seed=2)
    assert torch.equal(output.theory_codes, -expected)


def test_theory_codes_targeted_same_sign(trained_victim, knowledge, tiny_images, one_hot_labels) -> None:
    attack = ATTACKS.create("mainstay-targeted", steps=0, seed=2)
    attack.fit(trained_victim, knowledge)
    targets = one_hot_labels.roll(1, dims=1)

    output = attack.run(trained_victim, tiny_images, one_hot_labels, targets)

    expected = mainstay_codes(targets, knowledge.train_codes, knowledge.train_labels, seed=2)
    assert torch.equal(output.theory_codes, expected)


def test_guide_codes_use_zero_bit_rule(knowledge, one_hot_labels) -> None:
    attack = ATTACKS.create("mainstay", zero_bits="keep")
    attack.knowledge = knowledge

    codes = attack.guide_codes(one_hot_labels, None)

    expected = mainstay_codes(one_hot_labels, knowledge.train_codes, knowledge.train_labels, zero_bits="keep")
    assert torch.equal(codes, expected)


def test_targeted_guide_uses_targets(knowledge, one_hot_labels) -> None:
    attack = ATTACKS.create("mainstay-targeted")
    attack.knowledge = knowledge
    targets = one_hot_labels.roll(1, dims=1)

    codes = attack.guide_codes(one_hot_labels, targets)

    assert torch.equal(codes, mainstay_codes(targets, knowledge.train_codes, knowledge.train_labels))


def test_attack_lowers_margin_loss(trained_victim, knowledge, tiny_images, one_hot_labels) -> None:
    victim = copy.deepcopy(trained_victim)
    attack = ATTACKS.create("mainstay", steps=10, alpha=2 / 255, random_start=False)
    attack.fit(victim, knowledge)
    guide = attack.guide_codes(one_hot_labels, None)

    adversarial = attack.run(victim, tiny_images, one_hot_labels).images

    with torch.no_grad():
        before = masked_margin_loss(victim(tiny_images), guide, targeted=False)
        after = masked_margin_loss(victim(adversarial), guide, targeted=False)
    assert after < before


def test_unknown_zero_bits_rejected() -> None:
    with pytest.raises(ConfigError, match="unknown zero_bits"):
        ATTACKS.create("mainstay", zero_bits="random")


def test_capabilities() -> None:
    plain = ATTACKS.get("mainstay").capabilities
    targeted = ATTACKS.get("mainstay-targeted").capabilities

    assert not plain.targeted
    assert plain.label_aware
    assert plain.needs_train_codes
    assert targeted.targeted
