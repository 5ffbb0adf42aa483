"""Device choice, seeding and version stamps for records."""

from __future__ import annotations

import platform
import random
from typing import Any

import numpy as np
import torch

from models.errors import ConfigError

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(name: str = "auto") -> torch.device:
    """Return the torch device for ``auto``, ``cpu``, ``cuda`` or ``cuda:N``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r} requested but no CUDA GPU is available; use --device cpu or auto")
        return torch.device(name)
    raise ConfigError(f"unknown device {name!r}; valid: auto, cpu, cuda, cuda:N")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch, and ask torch for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def versions(device: torch.device | None = None) -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        hashbench = version("hashbench")
    except PackageNotFoundError:
        hashbench = "unknown"
    stamp = {
        "hashbench": hashbench,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device) if device is not None else "cpu",
    }
    if device is not None and device.type == "cuda":
        stamp["gpu"] = torch.cuda.get_device_name(device)
    else:
        stamp["cpu"] = platform.processor() or platform.machine()
    return stamp
