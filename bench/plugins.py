"""Import user plug-in modules that register their own models, attacks or defenses.

A plug-in is any importable module whose import registers entries with the
``MODELS``, ``ATTACKS`` or ``DEFENSES`` decorators. Name it in a matrix
(``plugins = ["mypackage.attacks"]``) or in the ``HASHBENCH_PLUGINS``
environment variable (comma-separated). Workers of every executor import the
same modules before running a node.
"""

from __future__ import annotations

import importlib
import os

from models.errors import ConfigError

ENVIRONMENT_VARIABLE = "HASHBENCH_PLUGINS"


def plugin_names(extra: list[str] | None = None) -> list[str]:
    names = [name.strip() for name in os.environ.get(ENVIRONMENT_VARIABLE, "").split(",") if name.strip()]
    for name in extra or []:
        if name not in names:
            names.append(name)
    return names


def import_plugins(names: list[str]) -> None:
    """Import each module; raise ``ConfigError`` naming the module that failed."""
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as error:
            raise ConfigError(
                f"cannot import plug-in module {name!r}: {error}; install it or add its folder to PYTHONPATH"
            ) from error
