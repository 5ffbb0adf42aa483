"""The work units of HashBench: train, defend, encode, choose targets, attack.

Each step reads its inputs, computes one artefact, writes it atomically under
the results root at a path keyed by a hash of everything that determines it,
and returns it. A step whose artefact exists returns the stored one. The
command line and the matrix harness both call these functions.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bench import store
from bench.cache import ResultsRoot
from bench.data import dataset_info, load_dataset
from bench.data.base import RetrievalData
from bench.data.splits import SplitSpec
from bench.evaluation import retrieval_report
from bench.runtime import versions
from models import MODELS
from models.checkpoint import load_checkpoint, read_checkpoint_config, save_checkpoint
from models.errors import CheckpointError, DataError
from models.training import TrainConfig, encode_images, train_model

log = logging.getLogger(__name__)

# Bump when a change alters what a step computes; it is part of every key.
STEP_VERSION = 1


@dataclass(frozen=True)
class DataSpec:
    """Dataset name, split settings and data folder of one dataset split."""

    dataset: str
    split: SplitSpec
    data_root: str | None = None

    def key(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "split": self.split.as_dict()}


_DATA: dict[tuple, RetrievalData] = {}


def load_data(spec: DataSpec, root: ResultsRoot) -> RetrievalData:
    """Load (once per process) the dataset and its stored split."""
    cache_key = (spec.dataset, spec.split, spec.data_root, str(root.path))
    if cache_key not in _DATA:
        _DATA[cache_key] = load_dataset(spec.dataset, data_root=spec.data_root, spec=spec.split,
                                        store_dir=root.cache)
    return _DATA[cache_key]


def data_topk(data: RetrievalData) -> int | None:
    return data.split.get("topk", dataset_info(data.name).topk)


# -- train ------------------------------------------------------------------
def train_key(data: RetrievalData, model_name: str, n_bits: int, options: dict[str, Any],
              train: TrainConfig) -> str:
    return store.hash_config({
        "step": "train", "version": STEP_VERSION, "split": data.split_hash, "model": model_name,
        "n_bits": n_bits, "options": options, "train": train.as_dict(),
    })


def train_step(
    root: ResultsRoot,
    data: RetrievalData,
    *,
    model_name: str,
    n_bits: int,
    train: TrainConfig,
    options: dict[str, Any] | None = None,
    profile: str = "custom",
    device: torch.device = torch.device("cpu"),
    on_epoch: Callable[[int, dict[str, Any]], None] | None = None,
    on_batch: Callable[[int, int], None] | None = None,
) -> Path:
    """Train ``model_name`` on the split's training set; return the checkpoint path."""
    options = dict(options or {})
    key = train_key(data, model_name, n_bits, options, train)
    path = root.checkpoint(key)
    if path.is_file():
        log.info("train %s/%d bits: cached checkpoint %s", model_name, n_bits, path.name)
        return path
    channels, height, _ = data.image_shape
    model = MODELS.create(
        model_name, n_bits=n_bits, n_classes=data.n_classes, in_channels=channels, image_size=height,
        seed=train.seed, **options,
    )
    started = time.perf_counter()
    history = train_model(model, data.train, train, device=device, on_epoch=on_epoch, on_batch=on_batch)
    seconds = time.perf_counter() - started
    codes = encode_all(model, data, device)
    topk = data_topk(data)
    clean_map = retrieval_report(query_codes=codes["query"], database_codes=codes["database"],
                                 query_labels=data.query.labels, database_labels=data.database.labels,
                                 topk=topk, curves=False)["map"]
    log.info("train %s/%d bits: MAP@%s %.4f after %.1f s", model_name, n_bits, topk, clean_map, seconds)
    config = {
        "kind": "model",
        "key": key,
        "name": model_name,
        "dataset": data.name,
        "split": {key_: value for key_, value in data.split.items() if key_ != "root"},
        "train": train.as_dict(),
        "profile": profile,
        "history": history,
        "train_seconds": seconds,
        "clean_map": clean_map,
        "topk": topk,
        "versions": versions(device),
    }
    save_checkpoint(path, model, config)
    store.save_tensors(root.codes(encode_key(key, data)), codes)
    return path


# -- load -------------------------------------------------------------------
def open_checkpoint(path: Path, data: RetrievalData | None = None, device: torch.device = torch.device("cpu")):
    """Load a checkpoint and, when ``data`` is given, check it belongs to that split."""
    model, config = load_checkpoint(path, map_location="cpu")
    if data is not None:
        stored = config.get("split", {}).get("hash")
        if stored != data.split_hash:
            raise CheckpointError(
                f"{path} was trained on split {stored} of {config.get('dataset')!r}, not on split "
                f"{data.split_hash} of {data.name!r}; use the same dataset and split settings"
            )
        channels, height, _ = data.image_shape
        model_config = config["model"]
        if model_config["in_channels"] != channels or model_config["n_classes"] != data.n_classes:
            raise CheckpointError(
                f"{path} expects {model_config['in_channels']}-channel images and {model_config['n_classes']} "
                f"classes, but {data.name} has {channels} and {data.n_classes}"
            )
    return model.to(device).eval(), config


def checkpoint_key(path: Path) -> str:
    """Return the key a checkpoint was stored under, or a hash of the file for others."""
    config = read_checkpoint_config(path)
    return str(config.get("key") or store.hash_file(path))


def data_spec_from_checkpoint(config: dict[str, Any], data_root: str | None) -> DataSpec:
    split = config.get("split", {})
    if "spec" not in split:
        raise CheckpointError("checkpoint config has no split spec; it was not made by 'bench train'")
    return DataSpec(config["dataset"], SplitSpec(**split["spec"]), data_root)


# -- encode -----------------------------------------------------------------
def encode_step(root: ResultsRoot, data: RetrievalData, checkpoint: Path,
                device: torch.device = torch.device("cpu")) -> dict[str, torch.Tensor]:
    """Return the binary codes of the query, train and database sets under ``checkpoint``."""
    path = root.codes(encode_key(checkpoint_key(checkpoint), data))
    if path.is_file():
        return store.load_tensors(path)
    model, _ = open_checkpoint(checkpoint, data, device)
    codes = encode_all(model, data, device)
    store.save_tensors(path, codes)
    return codes


def encode_key(checkpoint: str, data: RetrievalData) -> str:
    return store.hash_config({"step": "encode", "version": STEP_VERSION, "checkpoint": checkpoint,
                              "split": data.split_hash})


def encode_all(model, data: RetrievalData, device: torch.device) -> dict[str, torch.Tensor]:
    """Return the eval-mode binary codes of the query, train and database sets."""
    return {part: encode_images(model, getattr(data, part), device=device) for part in ("query", "train", "database")}


# -- targets ------------------------------------------------------------------
def targets_step(root: ResultsRoot, data: RetrievalData, *, seed: int = 0, min_count: int = 9) -> dict[str, torch.Tensor]:
    """Return the shared target labels of the split's queries (SAAT rule), stored once per split.

    ``min_count`` database items must carry each target exactly, so DHTA can
    draw its 9 anchors without replacement.
    """
    from attacks import select_target_labels

    key = store.hash_config({"step": "targets", "version": STEP_VERSION, "split": data.split_hash,
                             "seed": seed, "min_count": min_count})
    path = root.targets(key)
    if path.is_file():
        return store.load_tensors(path)
    targets, valid = select_target_labels(data.query.labels, data.database.labels, seed=seed, min_count=min_count)
    if not bool(valid.any()):
        raise DataError(f"no query of {data.name} has a valid target label (min_count={min_count})")
    result = {"targets": targets, "valid": valid}
    store.save_tensors(path, result)
    return result
