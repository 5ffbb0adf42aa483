"""Checkpoints: a state_dict plus a JSON config in one file.

The file is a plain dict of tensors and strings, loaded with
``torch.load(..., weights_only=True)``, so opening a checkpoint from someone
else's results folder cannot run code. Writes go to a temporary file that is
renamed into place, so an interrupted save never leaves a half-written file.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from models.base import HashingModel, build_model
from models.errors import CheckpointError, ConfigError

FORMAT = "hashbench-checkpoint"
FORMAT_VERSION = 1


def save_checkpoint(path: str | Path, model: HashingModel, config: dict[str, Any]) -> Path:
    """Atomically write ``model``'s weights and ``config`` (JSON-serialisable) to ``path``.

    ``config`` is stored with ``model.config()`` under the key ``"model"``.
    """
    path = Path(path)
    full_config = {**config, "model": model.config(), "training_state": model.training_state()}
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config_json": json.dumps(full_config, sort_keys=True),
        "state_dict": {key: value.detach().cpu() for key, value in model.state_dict().items()},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(descriptor)
    try:
        torch.save(payload, temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def read_checkpoint_config(path: str | Path) -> dict[str, Any]:
    return _read(Path(path))[0]


def load_checkpoint(
    path: str | Path,
    *,
    expected_model: str | None = None,
    expected_bits: int | None = None,
    map_location: str | torch.device = "cpu",
) -> tuple[HashingModel, dict[str, Any]]:
    """Rebuild the model stored at ``path`` and return it with its config.

    Raises ``CheckpointError`` when the file is not a HashBench checkpoint,
    when it contains another model or code length than expected, or when its
    weights do not fit the architecture its config names.
    """
    path = Path(path)
    config, state_dict = _read(path, map_location)
    model_config = config["model"]
    if expected_model is not None and model_config["model"] != expected_model:
        raise CheckpointError(
            f"{path} contains a {model_config['model']!r} model but {expected_model!r} was expected; "
            f"pass a {expected_model} checkpoint or change the model name"
        )
    if expected_bits is not None and model_config["n_bits"] != expected_bits:
        raise CheckpointError(
            f"{path} contains {model_config['n_bits']}-bit codes but {expected_bits} bits were expected; "
            f"train a {expected_bits}-bit model or change the code length"
        )
    try:
        model = build_model(model_config)
    except ConfigError as error:
        raise CheckpointError(f"{path} has an invalid model config: {error}") from error
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as error:
        raise CheckpointError(
            f"{path} does not fit a {model_config['model']} model with the {model_config['backbone']} "
            f"backbone and {model_config['n_bits']} bits: {str(error).splitlines()[0]}"
        ) from error
    model.load_training_state(config.get("training_state", {}))
    return model, config


def _read(path: Path, map_location: str | torch.device = "cpu") -> tuple[dict[str, Any], dict[str, Any]]:
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found; train one with 'bench train' first")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises several types for corrupt or unsafe files
        raise CheckpointError(
            f"cannot read checkpoint {path}: {type(error).__name__}: {str(error).splitlines()[0]}. "
            "Only HashBench checkpoints (weights_only) are accepted"
        ) from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a HashBench checkpoint (no '{FORMAT}' marker)")
    if payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {payload.get('format_version')}; "
            f"this HashBench reads version {FORMAT_VERSION}"
        )
    return json.loads(payload["config_json"]), payload["state_dict"]
