"""Contract tests that every registered attack must pass on a tiny victim.

The tests are parametrised over ``ATTACKS.names()``, so a newly registered
attack is covered without editing this file. Each attack is built with
``steps=3``, ``batch_size=4`` and the small sizes in ``TINY_OPTIONS``. An
attack missing from that table keeps its other defaults, so its tests fail
if those defaults do not run on a tiny victim.
"""

from __future__ import annotations

import copy
import inspect
import json
from dataclasses import dataclass

import pytest
import torch

from attacks import ATTACKS, Attack, AttackOutput, Capabilities, VictimKnowledge, select_target_labels
from models.base import HashingModel
from models.errors import ConfigError, DataError, UnsupportedPairingError
from models.imageset import TensorImageSet
from models.training import encode_images
from tests.conftest import one_torch_thread

ATTACK_NAMES = ATTACKS.names()
TARGETED_NAMES = [name for name in ATTACK_NAMES if ATTACKS.get(name).capabilities.targeted]
EPS = 8 / 255
N_QUERIES = 6
ANCHORS_PER_CLASS = 9  # DHTA draws 9 anchors without replacement from the exact matches of a target.

# Sizes that make the per-victim preparation (PrototypeNet, GAN) take well under a second.
PROTOTYPE_OPTIONS = {"prototype_steps": 2, "prototype_batch_size": 4, "hidden_size": 8, "feature_size": 8}
TINY_OPTIONS: dict[str, dict[str, object]] = {
    "tha": PROTOTYPE_OPTIONS,
    "prosgan": {
        **PROTOTYPE_OPTIONS,
        "epochs": 1,
        "gan_batch_size": 8,
        "width": 4,
        "label_width": 4,
        "residual_blocks": 1,
        "discriminator_width": 4,
    },
}

# Constructor names used by other attack libraries that HashBench spells eps, steps and alpha.
NONSTANDARD_NAMES = {"epsilon", "nb_iter", "max_epsilon", "iterations", "eps_iter", "step_size", "num_steps"}


def build_attack(name: str, **overrides: object) -> Attack:
    options = {"steps": 3, "batch_size": 4, **TINY_OPTIONS.get(name, {}), **overrides}
    return ATTACKS.create(name, **options)


@dataclass
class Setting:
    """The tiny victim, the attacker's knowledge of it, and the queries."""

    model: HashingModel
    knowledge: VictimKnowledge
    images: torch.Tensor
    labels: torch.Tensor
    targets: torch.Tensor


@pytest.fixture(scope="module")
def setting(trained_victim: HashingModel, toy_image_set: TensorImageSet) -> Setting:
    generator = torch.Generator().manual_seed(3)
    n_classes = toy_image_set.labels.shape[1]
    classes = torch.arange(n_classes * ANCHORS_PER_CLASS) % n_classes
    database_pixels = torch.randint(0, 256, (len(classes), *toy_image_set.image_shape), generator=generator)
    database = TensorImageSet(database_pixels.to(torch.uint8), torch.nn.functional.one_hot(classes).float())
    with one_torch_thread():
        train_codes = encode_images(trained_victim, toy_image_set)
        database_codes = encode_images(trained_victim, database)
    knowledge = VictimKnowledge(
        train_codes=train_codes,
        train_labels=toy_image_set.labels,
        database_codes=database_codes,
        database_labels=database.labels,
        train_images=toy_image_set,
    )
    images = torch.rand(N_QUERIES, *toy_image_set.image_shape, generator=generator)
    labels = torch.nn.functional.one_hot(torch.arange(N_QUERIES) % n_classes, n_classes).float()
    targets, valid = select_target_labels(labels, database.labels, seed=0, min_count=ANCHORS_PER_CLASS)
    assert valid.all()
    return Setting(trained_victim, knowledge, images, labels, targets)


@dataclass
class AttackRun:
    """One fit and run of an attack on a copy of the victim, with what was recorded before it."""

    name: str
    attack: Attack
    output: AttackOutput
    model: HashingModel
    images: torch.Tensor
    images_before: torch.Tensor
    labels: torch.Tensor
    labels_before: torch.Tensor
    targets: torch.Tensor | None
    targets_before: torch.Tensor | None
    flags_before: list[bool]
    state_before: dict[str, torch.Tensor]


def fit_and_run(name: str, setting: Setting, model: HashingModel) -> tuple[Attack, AttackOutput]:
    attack = build_attack(name)
    targets = setting.targets if attack.capabilities.targeted else None
    attack.fit(model, setting.knowledge)
    return attack, attack.run(model, setting.images, setting.labels, targets)


@pytest.fixture(scope="module", params=ATTACK_NAMES)
def attack_run(request: pytest.FixtureRequest, setting: Setting) -> AttackRun:
    """Fit and run one attack on a victim left in train mode with its first parameter frozen."""
    name = request.param
    model = copy.deepcopy(setting.model).train()
    next(model.parameters()).requires_grad_(False)
    flags_before = [parameter.requires_grad for parameter in model.parameters()]
    state_before = {key: value.clone() for key, value in model.state_dict().items()}
    targeted = ATTACKS.get(name).capabilities.targeted
    images_before = setting.images.clone()
    labels_before = setting.labels.clone()
    targets_before = setting.targets.clone() if targeted else None

    with one_torch_thread():
        attack, output = fit_and_run(name, setting, model)

    return AttackRun(
        name, attack, output, model,
        setting.images, images_before, setting.labels, labels_before,
        setting.targets if targeted else None, targets_before,
        flags_before, state_before,
    )


def test_output_shape(attack_run: AttackRun) -> None:
    assert attack_run.output.images.shape == attack_run.images.shape
    assert attack_run.output.images.dtype == attack_run.images.dtype


def test_output_within_eps(attack_run: AttackRun) -> None:
    change = (attack_run.output.images - attack_run.images).abs().max().item()

    assert change <= EPS + 1e-6


def test_output_pixel_range(attack_run: AttackRun) -> None:
    assert attack_run.output.images.min() >= 0
    assert attack_run.output.images.max() <= 1


def test_output_finite(attack_run: AttackRun) -> None:
    assert torch.isfinite(attack_run.output.images).all()


def test_output_changes_images(attack_run: AttackRun) -> None:
    # Every attack changes at least one pixel within three steps (or one generator pass).
    assert not torch.equal(attack_run.output.images, attack_run.images)


def test_unbounded_images_reported(attack_run: AttackRun) -> None:
    unbounded = attack_run.output.extra_images.get("unbounded")
    if attack_run.attack.capabilities.bounded:
        assert unbounded is None
        return
    assert unbounded is not None
    assert unbounded.shape == attack_run.images.shape
    assert torch.isfinite(unbounded).all()


def test_theory_codes_binary(attack_run: AttackRun) -> None:
    codes = attack_run.output.theory_codes
    if codes is None:
        return
    assert codes.shape == (N_QUERIES, attack_run.model.n_bits)
    assert set(codes.unique().tolist()) <= {-1.0, 1.0}


def test_inputs_untouched(attack_run: AttackRun) -> None:
    assert torch.equal(attack_run.images, attack_run.images_before)
    assert torch.equal(attack_run.labels, attack_run.labels_before)
    if attack_run.targets is not None:
        assert torch.equal(attack_run.targets, attack_run.targets_before)


def test_victim_mode_restored(attack_run: AttackRun) -> None:
    assert attack_run.model.training
    assert all(module.training for module in attack_run.model.modules())


def test_victim_flags_restored(attack_run: AttackRun) -> None:
    flags = [parameter.requires_grad for parameter in attack_run.model.parameters()]

    assert flags == attack_run.flags_before


def test_victim_weights_unchanged(attack_run: AttackRun) -> None:
    state = attack_run.model.state_dict()

    assert state.keys() == attack_run.state_before.keys()
    for key, value in attack_run.state_before.items():
        assert torch.equal(state[key], value), key


def test_victim_has_no_gradients(attack_run: AttackRun) -> None:
    for name, parameter in attack_run.model.named_parameters():
        assert parameter.grad is None, name


def test_same_seed_same_images(attack_run: AttackRun, setting: Setting) -> None:
    _, repeat = fit_and_run(attack_run.name, setting, copy.deepcopy(setting.model))

    assert torch.equal(repeat.images, attack_run.output.images)


@pytest.mark.parametrize("name", ATTACK_NAMES)
def test_config_has_standard_keys(name: str) -> None:
    attack = build_attack(name, eps=4 / 255, alpha=0.5 / 255, steps=2, seed=7)

    config = attack.config()

    assert config["attack"] == name
    assert config["eps"] == 4 / 255
    assert config["alpha"] == 0.5 / 255
    assert config["steps"] == 2
    assert config["seed"] == 7
    assert json.loads(json.dumps(config)) == config


@pytest.mark.parametrize("name", ATTACK_NAMES)
def test_default_config_has_standard_keys(name: str) -> None:
    config = ATTACKS.create(name).config()

    for key in ("eps", "alpha", "steps", "seed"):
        assert key in config, key


@pytest.mark.parametrize("name", ATTACK_NAMES)
def test_capabilities_type(name: str) -> None:
    attack_class = ATTACKS.get(name)

    assert issubclass(attack_class, Attack)
    assert isinstance(attack_class.capabilities, Capabilities)
    assert attack_class.name == name


@pytest.mark.parametrize("name", ATTACK_NAMES)
def test_constructor_standard_names(name: str) -> None:
    for cls in ATTACKS.get(name).__mro__:
        if cls is object:
            continue
        parameters = set(inspect.signature(cls.__init__).parameters)
        assert not parameters & NONSTANDARD_NAMES, (cls.__name__, parameters & NONSTANDARD_NAMES)


@pytest.mark.parametrize("name", ATTACK_NAMES)
def test_nan_pixels_rejected(name: str, setting: Setting) -> None:
    images = setting.images.clone()
    images[0, 0, 0, 0] = float("nan")

    with pytest.raises(DataError, match="NaN"):
        build_attack(name).run(setting.model, images, setting.labels, setting.targets)


@pytest.mark.parametrize("name", ATTACK_NAMES)
@pytest.mark.parametrize("value", [-0.1, 1.5])
def test_pixels_outside_box_rejected(name: str, value: float, setting: Setting) -> None:
    images = setting.images.clone()
    images[1, 0, 2, 3] = value

    with pytest.raises(DataError, match=r"\[0, 1\] pixel scale"):
        build_attack(name).run(setting.model, images, setting.labels, setting.targets)


@pytest.mark.parametrize("name", ATTACK_NAMES)
def test_non_image_tensor_rejected(name: str, setting: Setting) -> None:
    with pytest.raises(DataError, match="n, C, H, W"):
        build_attack(name).run(setting.model, setting.images[:, 0], setting.labels, setting.targets)


@pytest.mark.parametrize("name", ATTACK_NAMES)
def test_label_rows_mismatch_rejected(name: str, setting: Setting) -> None:
    with pytest.raises(DataError, match="labels must be"):
        build_attack(name).run(setting.model, setting.images, setting.labels[:-1], setting.targets)


@pytest.mark.parametrize("name", TARGETED_NAMES)
def test_missing_targets_rejected(name: str, setting: Setting) -> None:
    with pytest.raises(ConfigError, match="needs target_labels"):
        build_attack(name).run(setting.model, setting.images, setting.labels)


@pytest.mark.parametrize("name", TARGETED_NAMES)
def test_target_shape_mismatch_rejected(name: str, setting: Setting) -> None:
    with pytest.raises(DataError, match="target_labels have shape"):
        build_attack(name).run(setting.model, setting.images, setting.labels, setting.targets[:-1])


@pytest.mark.parametrize("name", TARGETED_NAMES)
def test_zero_target_rejected(name: str, setting: Setting) -> None:
    targets = setting.targets.clone()
    targets[2] = 0

    with pytest.raises(DataError, match="all zero"):
        build_attack(name).run(setting.model, setting.images, setting.labels, targets)


def needs_knowledge(name: str) -> bool:
    capabilities = ATTACKS.get(name).capabilities
    return capabilities.needs_train_codes or capabilities.needs_database_codes or capabilities.needs_train_images


@pytest.mark.parametrize("name", [name for name in ATTACK_NAMES if needs_knowledge(name)])
def test_fit_without_knowledge_rejected(name: str, setting: Setting) -> None:
    with pytest.raises(UnsupportedPairingError, match="needs the victim's"):
        build_attack(name).fit(setting.model, VictimKnowledge())


@pytest.mark.parametrize("name", ATTACK_NAMES)
def test_invalid_eps_rejected(name: str) -> None:
    with pytest.raises(ConfigError, match="eps must lie in"):
        build_attack(name, eps=8.0)
