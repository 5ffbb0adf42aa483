"""Profiles: every epoch, step and sample count in one place.

``quick`` is for tests (the whole quick matrix in about a minute),
``default`` fits the default matrix into 30 minutes on a 2-core CPU, and
``paper`` holds the reference values of the SAAT code for GPU users. The
profile name and its values are written into every record, so numbers from
different profiles never share a leaderboard cell.
"""

from __future__ import annotations

import copy
from typing import Any

from models.errors import ConfigError

# Attack settings per profile; attacks not named keep their reference defaults.
_REFERENCE_ATTACKS: dict[str, dict[str, Any]] = {
    "mainstay": {"steps": 100},
    "mainstay-targeted": {"steps": 100},
    "p2p": {"steps": 2000},
    "dhta": {"steps": 2000},
    "tha": {"steps": 100, "prototype_steps": 30000},
    "prosgan": {"epochs": 100, "gan_batch_size": 24, "prototype_steps": 30000},
    "hag": {"steps": 2000},
    "sdha": {"steps": 1500},
    "sdha-targeted": {"steps": 1500},
}

PROFILES: dict[str, dict[str, Any]] = {
    "paper": {
        "description": "reference step counts and epochs of the SAAT code (GPU)",
        "split": {"n_query": 1000, "n_train": 5000, "n_database": None},
        "queries": None,
        "train": {"epochs": 100, "batch_size": 32, "lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4},
        "attacks": _REFERENCE_ATTACKS,
        "defenses": {"saat": {"epochs": 20}, "atrdh": {"epochs": 100}, "cgat": {"epochs": 30}},
        "monitor": {"queries": 200, "steps": 20},
    },
    "default": {
        "description": "2-core CPU: the default matrix in at most 30 minutes",
        "split": {"n_query": 1000, "n_train": 5000, "n_database": None},
        "queries": 300,
        # 30 epochs without weight decay: MAP@1000 about 0.81 for DPH in about 30 s.
        "train": {"epochs": 30, "batch_size": 64, "lr": 0.05, "momentum": 0.9, "weight_decay": 0.0},
        "attacks": {
            "mainstay": {"steps": 100},
            "mainstay-targeted": {"steps": 100},
            "p2p": {"steps": 100},
            "dhta": {"steps": 100},
            "tha": {"steps": 100, "prototype_steps": 500, "prototype_lr": 1e-3, "hidden_size": 512,
                    "feature_size": 128},
            "prosgan": {"epochs": 1, "gan_batch_size": 64, "prototype_steps": 500, "prototype_lr": 1e-3,
                        "hidden_size": 512, "feature_size": 128, "width": 16, "label_width": 32,
                        "residual_blocks": 1, "discriminator_width": 16},
            "hag": {"steps": 100},
            "sdha": {"steps": 100},
            "sdha-targeted": {"steps": 100},
        },
        "defenses": {"saat": {"epochs": 6}, "atrdh": {"epochs": 6, "lr": 5e-4, "hidden_size": 512, "feature_size": 128},
                     "cgat": {"epochs": 6}},
        "monitor": {"queries": 200, "steps": 20},
    },
    "quick": {
        "description": "tests: a tiny split and few steps (about a minute for the quick matrix)",
        "split": {"n_query": 200, "n_train": 1000, "n_database": 5000},
        "queries": 100,
        "train": {"epochs": 3, "batch_size": 64, "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4},
        "attacks": {
            "mainstay": {"steps": 10},
            "mainstay-targeted": {"steps": 10},
            "p2p": {"steps": 10},
            "dhta": {"steps": 10},
            "tha": {"steps": 10, "prototype_steps": 100, "prototype_lr": 1e-3, "hidden_size": 256, "feature_size": 64},
            "prosgan": {"epochs": 1, "gan_batch_size": 64, "prototype_steps": 100, "prototype_lr": 1e-3,
                        "hidden_size": 256, "feature_size": 64, "width": 8, "label_width": 16, "residual_blocks": 1,
                        "discriminator_width": 8},
            "hag": {"steps": 10},
            "sdha": {"steps": 10},
            "sdha-targeted": {"steps": 10},
        },
        "defenses": {"saat": {"epochs": 1}, "atrdh": {"epochs": 1, "hidden_size": 256, "feature_size": 64},
                     "cgat": {"epochs": 1}},
        "monitor": {"queries": 50, "steps": 5},
    },
}


def get_profile(name: str) -> dict[str, Any]:
    """Return a deep copy of profile ``name`` with its name included."""
    if name not in PROFILES:
        raise ConfigError(f"unknown profile {name!r}; valid: {', '.join(PROFILES)}")
    profile = copy.deepcopy(PROFILES[name])
    profile["name"] = name
    return profile
