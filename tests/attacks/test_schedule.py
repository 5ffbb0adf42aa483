"""Tests of the SAAT tanh-scale schedule used by the iterative attacks."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest

from attacks import ATTACKS
from attacks._schedule import scale_at
from models.errors import ConfigError

STAGES = [0.1, 0.1, 0.1, 0.1, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0]


def test_saat_schedule_100_steps() -> None:
    expected = [0.1] * 50 + [0.2] * 10 + [0.3] * 10 + [0.5] * 10 + [0.7] * 10 + [1.0] * 10

    assert [scale_at(step, 100, "saat") for step in range(100)] == expected


def test_saat_schedule_7_steps() -> None:
    # floor(i / 0.7) for i = 0..6 is 0, 1, 2, 4, 5, 7, 8, so stages 6 and 9 are skipped and 1.0 never comes.
    expected = [0.1, 0.1, 0.1, 0.1, 0.2, 0.5, 0.7]

    assert [scale_at(step, 7, "saat") for step in range(7)] == expected


@pytest.mark.parametrize("steps", [1, 2, 3, 10, 13, 30, 99, 1500, 2000])
def test_saat_schedule_exact_index(steps: int) -> None:
    for step in range(steps):
        index = math.floor(Fraction(step) / Fraction(steps, 10))
        assert scale_at(step, steps, "saat") == STAGES[index], (step, steps)


def test_schedule_none_constant() -> None:
    assert {scale_at(step, 50, "none") for step in range(50)} == {1.0}


def test_schedule_unknown_rejected() -> None:
    with pytest.raises(ConfigError, match="unknown scale_schedule 'linear'"):
        scale_at(0, 10, "linear")


def test_attack_rejects_unknown_schedule() -> None:
    with pytest.raises(ConfigError, match="unknown scale_schedule"):
        ATTACKS.create("mainstay", scale_schedule="linear")


def test_attack_scale_follows_schedule() -> None:
    attack = ATTACKS.create("mainstay", steps=10)

    assert [attack.scale(step) for step in range(10)] == STAGES
