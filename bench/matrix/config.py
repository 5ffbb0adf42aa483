"""Matrix files: parse, validate and expand into model variants and cells.

A matrix is a TOML file (see ``bench/matrices/*.toml``). Every name is
checked against the registries and every attack against every model variant
before any work starts, so a typo fails at once with the valid choices.
"""

from __future__ import annotations

import copy
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.commands.common import parse_eps
from bench.data import DATASETS
from bench.profiles import get_profile
from models.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

BUILTIN = Path(__file__).resolve().parent.parent / "matrices"
KNOWN_KEYS = {
    "name", "profile", "datasets", "bits", "models", "attacks", "seeds", "device", "threat", "defenses",
    "overrides", "model_options", "results_root", "data_root", "run", "plugins",
}
NORMS = ("linf",)


@dataclass(frozen=True)
class ModelVariant:
    """A hashing model, undefended (``defense`` None) or a defended copy."""

    model: str
    defense: str | None = None

    @property
    def name(self) -> str:
        return f"{self.model}+{self.defense}" if self.defense else self.model


@dataclass
class MatrixConfig:
    """A validated matrix: what to train, defend and attack, and with which profile."""

    name: str
    profile: dict[str, Any]
    datasets: list[str]
    bits: list[int]
    models: list[str]
    attacks: list[str]
    seeds: list[int]
    device: str
    eps: float
    defenses: dict[str, list[str]]
    model_options: dict[str, Any] = field(default_factory=dict)
    results_root: str | None = None
    data_root: str | None = None
    run: dict[str, Any] = field(default_factory=dict)
    plugins: list[str] = field(default_factory=list)
    source: str = "<builtin>"
    raw: dict[str, Any] = field(default_factory=dict)

    def variants(self) -> list[ModelVariant]:
        variants = []
        for model in self.models:
            variants.append(ModelVariant(model))
            for defense in self.defenses.get("every_model", []) + self.defenses.get(model, []):
                if ModelVariant(model, defense) not in variants:
                    variants.append(ModelVariant(model, defense))
        return variants

    def attack_options(self, attack: str) -> dict[str, Any]:
        options = dict(self.profile["attacks"].get(attack, {}))
        options["eps"] = self.eps
        return options


def load_matrix(source: str | Path | None) -> MatrixConfig:
    """Read a matrix file, or the built-in one named ``source`` (``default``, ``quick``, ``paper``)."""
    if source is None:
        source = "default"
    path = Path(source)
    if not path.is_file():
        builtin = BUILTIN / f"{source}.toml"
        if builtin.is_file():
            path = builtin
        else:
            names = ", ".join(sorted(p.stem for p in BUILTIN.glob("*.toml")))
            raise ConfigError(f"matrix file {source!r} not found; pass a TOML file or a built-in name ({names})")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"matrix file {path} is not valid TOML: {error}") from error
    return parse_matrix(raw, source=str(path))


def _list(raw: dict[str, Any], key: str, kind: type, default: list | None = None) -> list:
    value = raw.get(key, default)
    if value is None:
        raise ConfigError(f"matrix key {key!r} is missing; give a list of {kind.__name__} values")
    if not isinstance(value, list) or not value or not all(isinstance(item, kind) and not isinstance(item, bool) for item in value):
        raise ConfigError(f"matrix key {key!r} must be a non-empty list of {kind.__name__} values, got {value!r}")
    return value


def parse_matrix(raw: dict[str, Any], *, source: str = "<dict>") -> MatrixConfig:
    """Validate a parsed matrix; raise ``ConfigError`` naming the key, the value and the valid choices."""
    from attacks import ATTACKS
    from defenses import DEFENSES
    from models import MODELS

    from bench.plugins import import_plugins, plugin_names

    plugins = plugin_names(list(raw.get("plugins", [])))
    import_plugins(plugins)
    unknown = set(raw) - KNOWN_KEYS
    if unknown:
        raise ConfigError(f"unknown matrix keys {sorted(unknown)} in {source}; valid keys: {', '.join(sorted(KNOWN_KEYS))}")
    profile = get_profile(str(raw.get("profile", "default")))
    _apply_overrides(profile, raw.get("overrides", {}))
    datasets = _list(raw, "datasets", str, ["fashion-mnist"])
    for dataset in datasets:
        if dataset not in DATASETS:
            raise ConfigError(f"unknown dataset {dataset!r} in {source}; valid: {', '.join(DATASETS)}")
    bits = _list(raw, "bits", int, [32])
    if any(value < 2 for value in bits):
        raise ConfigError(f"code lengths must be at least 2 bits, got {bits}")
    models = [MODELS.check(name) for name in _list(raw, "models", str)]
    attack_names = _list(raw, "attacks", str, ["all"])
    attacks = ATTACKS.names() if attack_names == ["all"] else [ATTACKS.check(name) for name in attack_names]
    defenses_raw = raw.get("defenses", {})
    if not isinstance(defenses_raw, dict):
        raise ConfigError(f"[defenses] must be a table like every_model = ['saat'], got {defenses_raw!r}")
    defenses: dict[str, list[str]] = {}
    for key, names in defenses_raw.items():
        if key != "every_model":
            MODELS.check(key)
            if key not in models:
                raise ConfigError(f"[defenses] names model {key!r}, which is not in models = {models}")
        if not isinstance(names, list):
            raise ConfigError(f"[defenses] {key} must be a list of defense names, got {names!r}")
        defenses[key] = [DEFENSES.check(name) for name in names]
    threat = raw.get("threat", {})
    norm = threat.get("norm", "linf")
    if norm not in NORMS:
        raise ConfigError(f"unsupported threat norm {norm!r}; valid: {', '.join(NORMS)}")
    eps = parse_eps(str(threat.get("eps", "8/255")))
    seeds = _list(raw, "seeds", int, [0])
    device = str(raw.get("device", "auto"))
    config = MatrixConfig(
        name=str(raw.get("name", Path(source).stem)),
        profile=profile, datasets=datasets, bits=bits, models=models, attacks=attacks, seeds=seeds,
        device=device, eps=eps, defenses=defenses, model_options=dict(raw.get("model_options", {})),
        results_root=raw.get("results_root"), data_root=raw.get("data_root"), run=dict(raw.get("run", {})),
        plugins=plugins, source=source, raw=raw,
    )
    _check_pairings(config)
    return config


def _apply_overrides(profile: dict[str, Any], overrides: dict[str, Any]) -> None:
    """Merge ``[overrides]`` tables into the profile (e.g. ``[overrides.attacks.mainstay] steps = 50``)."""
    if not isinstance(overrides, dict):
        raise ConfigError(f"[overrides] must be a table, got {overrides!r}")
    for key, value in overrides.items():
        if key not in profile or key == "name":
            valid = ", ".join(k for k in profile if k not in ("name", "description"))
            raise ConfigError(f"unknown override {key!r}; valid: {valid}")
        if isinstance(value, dict) and isinstance(profile[key], dict):
            for inner, inner_value in value.items():
                if isinstance(inner_value, dict):
                    profile[key].setdefault(inner, {}).update(copy.deepcopy(inner_value))
                else:
                    profile[key][inner] = inner_value
        else:
            profile[key] = value


def pairing_problem(attack: str, variant: ModelVariant) -> str | None:
    """Return why ``attack`` cannot run against ``variant``, or None when it can."""
    from attacks import ATTACKS
    from models import MODELS

    caps = ATTACKS.get(attack).capabilities
    model_class = MODELS.get(variant.model)
    if caps.needs_gradients and not getattr(model_class, "differentiable", True):
        return f"{attack} needs input gradients but {variant.name} is not differentiable"
    return None


def _check_pairings(config: MatrixConfig) -> None:
    """Raise when an attack's settings are invalid or a requested pairing is impossible.

    Attacks named explicitly must pair with every model variant; with
    ``attacks = ["all"]`` an impossible pairing becomes a skipped cell instead.
    """
    from attacks import ATTACKS

    for attack in config.attacks:
        options = config.attack_options(attack)
        try:
            ATTACKS.create(attack, **options)
        except TypeError as error:
            raise ConfigError(f"invalid settings {options} for attack {attack!r}: {error}") from error
    if config.raw.get("attacks", ["all"]) == ["all"]:
        return
    problems = [problem for attack in config.attacks for variant in config.variants()
                if (problem := pairing_problem(attack, variant))]
    if problems:
        raise ConfigError("impossible pairings in the matrix: " + "; ".join(problems)
                          + ". Remove those attacks or models, or use attacks = [\"all\"] to skip such cells")
