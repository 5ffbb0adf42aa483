"""Tests of checkpoint saving and loading, including files that must be rejected."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch

from models.checkpoint import FORMAT, FORMAT_VERSION, load_checkpoint, read_checkpoint_config, save_checkpoint
from models.errors import CheckpointError


class Opaque:
    """A plain class instance, which weights_only loading must not rebuild."""

    def __init__(self) -> None:
        self.value = 3


class CreatesMarker:
    """An object whose unpickling calls ``os.mkdir(path)``, the classic pickle code-execution payload."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.mkdir, (str(self.path),)


@pytest.fixture
def warmed_model(make_model, tiny_images):
    """Return a DPH model whose BatchNorm statistics moved away from their initial values, in eval mode."""
    model = make_model("dph").train()
    with torch.no_grad():
        model(tiny_images)
    return model.eval()


def rewrite_config(path: Path, **changes: object) -> None:
    """Save the checkpoint at ``path`` again with ``changes`` applied to its model config."""
    payload = torch.load(path, weights_only=True)
    config = json.loads(payload["config_json"])
    config["model"].update(changes)
    payload["config_json"] = json.dumps(config)
    torch.save(payload, path)


def test_round_trip_same_outputs(tmp_path: Path, warmed_model, tiny_images) -> None:
    path = save_checkpoint(tmp_path / "dph.pt", warmed_model, {"dataset": "toy"})

    loaded, config = load_checkpoint(path)
    loaded.eval()

    assert type(loaded) is type(warmed_model)
    assert config["dataset"] == "toy"
    assert config["model"] == warmed_model.config()
    with torch.no_grad():
        assert torch.equal(loaded(tiny_images), warmed_model(tiny_images))
    for key, value in warmed_model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_round_trip_training_state(tmp_path: Path, make_model) -> None:
    model = make_model("hashnet")
    for step in range(200):
        model.training_scale(step)
    path = save_checkpoint(tmp_path / "hashnet.pt", model, {})

    loaded, config = load_checkpoint(path, expected_model="hashnet", expected_bits=16)

    assert loaded.training_state() == model.training_state()
    assert config["training_state"]["iteration"] == 200


def test_save_leaves_no_temporary_file(tmp_path: Path, warmed_model) -> None:
    save_checkpoint(tmp_path / "dph.pt", warmed_model, {})

    assert sorted(path.name for path in tmp_path.iterdir()) == ["dph.pt"]


def test_read_config_only(tmp_path: Path, warmed_model) -> None:
    path = save_checkpoint(tmp_path / "dph.pt", warmed_model, {"epochs": 3})

    config = read_checkpoint_config(path)

    assert config["epochs"] == 3
    assert config["model"]["model"] == "dph"


def test_wrong_expected_model(tmp_path: Path, warmed_model) -> None:
    path = save_checkpoint(tmp_path / "dph.pt", warmed_model, {})

    with pytest.raises(CheckpointError, match="'dph' model but 'csq' was expected"):
        load_checkpoint(path, expected_model="csq")


def test_wrong_expected_bits(tmp_path: Path, warmed_model) -> None:
    path = save_checkpoint(tmp_path / "dph.pt", warmed_model, {})

    with pytest.raises(CheckpointError, match="16-bit codes but 32 bits were expected"):
        load_checkpoint(path, expected_bits=32)


def test_config_bits_mismatch_weights(tmp_path: Path, warmed_model) -> None:
    path = save_checkpoint(tmp_path / "dph.pt", warmed_model, {})
    rewrite_config(path, n_bits=32)

    with pytest.raises(CheckpointError, match="does not fit a dph model"):
        load_checkpoint(path)


def test_config_channels_mismatch_weights(tmp_path: Path, warmed_model) -> None:
    path = save_checkpoint(tmp_path / "dph.pt", warmed_model, {})
    rewrite_config(path, in_channels=3, mean=[0.5, 0.5, 0.5], std=[0.2, 0.2, 0.2])

    with pytest.raises(CheckpointError, match="does not fit"):
        load_checkpoint(path)


def test_config_unknown_backbone(tmp_path: Path, warmed_model) -> None:
    path = save_checkpoint(tmp_path / "dph.pt", warmed_model, {})
    rewrite_config(path, backbone="no-such-net")

    with pytest.raises(CheckpointError, match="invalid model config"):
        load_checkpoint(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "absent.pt")


def test_corrupt_file(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.pt"
    path.write_bytes(b"\x00\x01 not a checkpoint \xff" * 10)

    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_checkpoint(path)


def test_truncated_file(tmp_path: Path, warmed_model) -> None:
    path = save_checkpoint(tmp_path / "dph.pt", warmed_model, {})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])

    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_checkpoint(path)


def test_plain_tensor_dict_rejected(tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    torch.save({"weight": torch.zeros(2)}, path)

    with pytest.raises(CheckpointError, match="not a HashBench checkpoint"):
        load_checkpoint(path)


def test_other_format_version_rejected(tmp_path: Path, warmed_model) -> None:
    path = save_checkpoint(tmp_path / "dph.pt", warmed_model, {})
    payload = torch.load(path, weights_only=True)
    payload["format_version"] = FORMAT_VERSION + 1
    torch.save(payload, path)

    with pytest.raises(CheckpointError, match="format version"):
        load_checkpoint(path)


def test_class_instance_rejected(tmp_path: Path) -> None:
    path = tmp_path / "object.pt"
    torch.save({"format": FORMAT, "format_version": FORMAT_VERSION, "extra": Opaque()}, path)

    with pytest.raises(CheckpointError, match="weights_only"):
        load_checkpoint(path)


def test_marker_payload_runs_under_pickle(tmp_path: Path) -> None:
    # Control for the next test: unrestricted unpickling does execute the payload.
    marker = tmp_path / "marker"

    pickle.loads(pickle.dumps(CreatesMarker(marker)))

    assert marker.exists()


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_code_payload_not_executed(tmp_path: Path, writer: str) -> None:
    marker = tmp_path / "marker"
    path = tmp_path / "payload.pt"
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, "config_json": CreatesMarker(marker)}
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        with path.open("wb") as handle:
            pickle.dump(payload, handle, protocol=2)

    with pytest.raises(CheckpointError):
        load_checkpoint(path)

    assert not marker.exists()
