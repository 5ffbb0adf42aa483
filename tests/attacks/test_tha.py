"""THA on a tiny victim: budget, determinism and the cached PrototypeNet."""

from __future__ import annotations

import pytest
import torch

import models
from attacks import ATTACKS, VictimKnowledge, select_target_labels
from attacks.tha import THA
from models.codes import binarize
from models.errors import ConfigError, UnsupportedPairingError

EPS = 8 / 255
TINY = {"prototype_steps": 30, "prototype_batch_size": 16, "hidden_size": 32, "feature_size": 16, "steps": 10}


def tiny_victim() -> models.HashingModel:
    return models.MODELS.create("dph", n_bits=16, n_classes=4, in_channels=1, image_size=16).eval()


def tiny_knowledge() -> VictimKnowledge:
    generator = torch.Generator().manual_seed(0)
    labels = torch.eye(4)[torch.arange(40) % 4]
    labels[::5, 1] = 1  # a few multi-label rows
    codes = binarize(torch.randn(40, 16, generator=generator))
    return VictimKnowledge(train_codes=codes, train_labels=labels, database_codes=codes, database_labels=labels)


def tiny_queries():
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(6, 1, 16, 16, generator=generator)
    labels = torch.eye(4)[torch.tensor([0, 1, 2, 3, 0, 2])]
    targets, valid = select_target_labels(labels, tiny_knowledge().database_labels, seed=0)
    assert valid.all()
    return images, labels, targets


def fitted_attack(**options) -> THA:
    attack = ATTACKS.create("tha", **{**TINY, **options})
    attack.fit(tiny_victim(), tiny_knowledge())
    return attack


def test_tha_registered_as_targeted() -> None:
    attack = ATTACKS.create("tha")
    assert isinstance(attack, THA)
    caps = attack.capabilities
    assert caps.targeted
    assert caps.needs_train_codes
    assert caps.needs_database_codes
    assert caps.bounded
    assert (attack.steps, attack.random_start, attack.eps, attack.alpha) == (100, False, EPS, 1 / 255)
    assert attack.scale_schedule == "saat"
    assert attack.prototype_steps == 30_000
    assert (attack.hidden_size, attack.feature_size) == (4096, 512)


def test_tha_output_within_budget() -> None:
    images, labels, targets = tiny_queries()
    attack = fitted_attack()
    output = attack.run(tiny_victim(), images, labels, targets)

    assert output.images.shape == images.shape
    assert torch.isfinite(output.images).all()
    assert output.images.min() >= 0
    assert output.images.max() <= 1
    assert (output.images - images).abs().max() <= EPS + 1e-6
    assert not torch.equal(output.images, images)
    assert torch.equal(output.theory_codes, attack.target_codes(targets))
    assert set(output.theory_codes.unique().tolist()) <= {-1.0, 1.0}


def test_tha_moves_codes_toward_targets() -> None:
    images, labels, targets = tiny_queries()
    model = tiny_victim()
    attack = fitted_attack(steps=20)
    output = attack.run(model, images, labels, targets)
    with torch.no_grad():
        clean = (model(images) * output.theory_codes).mean()
        attacked = (model(output.images) * output.theory_codes).mean()
    assert attacked > clean


def test_tha_same_seed_same_images() -> None:
    images, labels, targets = tiny_queries()
    first = fitted_attack(seed=3).run(tiny_victim(), images, labels, targets)
    second = fitted_attack(seed=3).run(tiny_victim(), images, labels, targets)
    assert torch.equal(first.images, second.images)
    assert torch.equal(first.theory_codes, second.theory_codes)


def test_tha_seed_changes_prototype_net() -> None:
    first = fitted_attack(seed=0).prepared_state()
    second = fitted_attack(seed=1).prepared_state()
    assert first.keys() == second.keys()
    assert not all(torch.equal(first[key], second[key]) for key in first)


def test_tha_prepared_state_round_trip() -> None:
    images, labels, targets = tiny_queries()
    trained = fitted_attack()
    expected = trained.run(tiny_victim(), images, labels, targets)

    restored = ATTACKS.create("tha", **TINY)
    restored.load_prepared_state(trained.prepared_state())
    output = restored.run(tiny_victim(), images, labels, targets)

    assert torch.equal(output.images, expected.images)
    assert torch.equal(output.theory_codes, expected.theory_codes)


def test_tha_rejects_state_of_other_sizes() -> None:
    state = fitted_attack().prepared_state()
    other = ATTACKS.create("tha", **{**TINY, "hidden_size": 64})
    with pytest.raises(ConfigError, match="hidden sizes"):
        other.load_prepared_state(state)


def test_tha_needs_training_codes() -> None:
    knowledge = tiny_knowledge()
    knowledge.train_codes = None
    with pytest.raises(UnsupportedPairingError, match="training codes"):
        ATTACKS.create("tha", **TINY).fit(tiny_victim(), knowledge)


def test_tha_fit_config_lists_training_settings() -> None:
    config = ATTACKS.create("tha", **TINY, softplus=False, triu_parity=True, seed=4).fit_config()
    assert config["attack"] == "tha"
    assert config["seed"] == 4
    assert (config["hidden_size"], config["feature_size"]) == (32, 16)
    assert (config["prototype_steps"], config["prototype_batch_size"]) == (30, 16)
    assert config["softplus"] is False
    assert config["triu_parity"] is True
    assert "steps" not in config  # attack-time settings do not invalidate a cached PrototypeNet
