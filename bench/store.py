"""Atomic file writes and content hashes for the results root."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


def _atomic(path: Path, write: Callable[[str], None]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(descriptor)
    try:
        write(temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to a temporary file in the same folder, then rename it over ``path``."""
    return _atomic(Path(path), lambda temporary: Path(temporary).write_text(text, encoding="utf-8"))


def write_json(path: str | Path, data: Any) -> Path:
    return write_text(path, json.dumps(data, indent=2, sort_keys=True, default=_json_default) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor]) -> Path:
    """Atomically save a dict of tensors, readable with ``load_tensors``."""
    cpu = {key: value.detach().cpu() for key, value in tensors.items()}
    return _atomic(Path(path), lambda temporary: torch.save(cpu, temporary))


def load_tensors(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    return torch.load(Path(path), map_location=map_location, weights_only=True)


def hash_config(data: Any, length: int = 16) -> str:
    """Return a short sha256 of ``data`` serialised as canonical JSON."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=_json_default)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def hash_file(path: str | Path, length: int = 16) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:length]


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"cannot serialise {type(value).__name__} to JSON")
