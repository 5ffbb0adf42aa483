"""Tests of the name-to-factory registry behind MODELS, BACKBONES and ATTACKS."""

from __future__ import annotations

import pytest

from attacks import ATTACKS
from models import MODELS
from models._registry import Registry
from models.backbones import BACKBONES
from models.errors import ConfigError


class Widget:
    def __init__(self, size: int = 1, colour: str = "red") -> None:
        self.size = size
        self.colour = colour


@pytest.fixture
def registry() -> Registry:
    widgets: Registry = Registry("widget")
    widgets.register("plain")(Widget)
    widgets.register("large", size=10)(Widget)
    return widgets


def test_register_duplicate_raises(registry: Registry) -> None:
    with pytest.raises(ConfigError, match="already registered"):
        registry.register("plain")(Widget)


def test_register_duplicate_ignores_case(registry: Registry) -> None:
    with pytest.raises(ConfigError, match="already registered"):
        registry.register("PLAIN")(Widget)


def test_unknown_name_lists_valid_names(registry: Registry) -> None:
    with pytest.raises(ConfigError) as raised:
        registry.create("nothing-like-it")
    message = str(raised.value)
    assert "unknown widget 'nothing-like-it'" in message
    assert "large, plain" in message
    assert "Did you mean" not in message


def test_unknown_name_suggests_closest(registry: Registry) -> None:
    with pytest.raises(ConfigError, match="Did you mean 'plain'"):
        registry.get("plian")


def test_empty_registry_message() -> None:
    with pytest.raises(ConfigError, match="none registered"):
        Registry("gadget").check("anything")


def test_lookup_ignores_case(registry: Registry) -> None:
    assert registry.get("PlAiN") is Widget
    assert registry.check("LARGE") == "large"


def test_create_applies_defaults_then_kwargs(registry: Registry) -> None:
    default = registry.create("large")
    overridden = registry.create("large", size=3, colour="blue")

    assert default.size == 10
    assert default.colour == "red"
    assert overridden.size == 3
    assert overridden.colour == "blue"


def test_defaults_returns_copy(registry: Registry) -> None:
    registry.defaults("large")["size"] = 99

    assert registry.defaults("large") == {"size": 10}


def test_names_sorted_and_container(registry: Registry) -> None:
    assert registry.names() == ["large", "plain"]
    assert list(registry) == ["large", "plain"]
    assert len(registry) == 2
    assert "Plain" in registry
    assert "missing" not in registry
    assert 3 not in registry


def test_register_returns_object_unchanged() -> None:
    widgets: Registry = Registry("widget")

    assert widgets.register("w")(Widget) is Widget


def test_project_registries_contents() -> None:
    # Membership, not equality: other tests register plug-in models and attacks in the same process.
    for name in ("csq", "dph", "dpsh", "hashnet"):
        assert name in MODELS, name
    assert "small-cnn" in BACKBONES
    for name in ("mainstay", "mainstay-targeted", "dhta", "p2p", "hag", "sdha", "sdha-targeted", "tha", "prosgan"):
        assert name in ATTACKS, name


def test_unknown_model_suggests_closest() -> None:
    with pytest.raises(ConfigError, match="Did you mean 'dpsh'"):
        MODELS.create("dpsn", n_bits=16)
