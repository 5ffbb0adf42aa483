"""The retrieval split protocol: seeded query / train / database indices, stored with a hash.

Single-label data is split per class. Queries come from the official test
images, the training set from the official training images, and the database
is every image that is not a query (so the training set is part of it, as in
the CIFAR-10 and FLICKR-25K protocols of the field). The indices and a hash
of the data and indices are written once; every later step reads the same
file, so results name the exact split they used.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from bench import store
from models.errors import ConfigError, DataError


@dataclass(frozen=True)
class SplitSpec:
    """Split sizes and seed. ``n_database=None`` keeps every non-query item."""

    n_query: int = 1000
    n_train: int = 5000
    n_database: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("n_query", "n_train"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"split {name} must be a positive integer, got {value!r}")
        if self.n_database is not None and (not isinstance(self.n_database, int) or self.n_database < 1):
            raise ConfigError(f"split n_database must be a positive integer or None, got {self.n_database!r}")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def fingerprint(*tensors: torch.Tensor) -> str:
    digest = hashlib.sha256()
    for tensor in tensors:
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def _per_class(labels: torch.Tensor, pool: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """Draw ``count`` indices from ``pool``, the same number from each class."""
    classes = torch.unique(labels[pool])
    per_class, remainder = divmod(count, len(classes))
    chosen = []
    for position, cls in enumerate(classes.tolist()):
        members = pool[labels[pool] == cls]
        take = per_class + (1 if position < remainder else 0)
        if take > len(members):
            raise ConfigError(f"class {cls} has {len(members)} items but the split asks for {take}")
        chosen.append(members[torch.randperm(len(members), generator=generator)[:take]])
    return torch.sort(torch.cat(chosen)).values


def make_split(
    class_ids: torch.Tensor, query_pool: torch.Tensor, train_pool: torch.Tensor, spec: SplitSpec
) -> dict[str, torch.Tensor]:
    """Return sorted query, train and database indices for single-label data."""
    generator = torch.Generator().manual_seed(spec.seed)
    query = _per_class(class_ids, query_pool, spec.n_query, generator)
    train = _per_class(class_ids, train_pool, spec.n_train, generator)
    is_query = torch.zeros(len(class_ids), dtype=torch.bool)
    is_query[query] = True
    rest = torch.nonzero(~is_query).flatten()
    if spec.n_database is None:
        database = rest
    else:
        if spec.n_database < spec.n_train or spec.n_database > len(rest):
            raise ConfigError(
                f"n_database={spec.n_database} must lie between n_train={spec.n_train} "
                f"and the {len(rest)} non-query items"
            )
        # The training items always belong to the database; the rest is drawn at random.
        is_train = torch.zeros(len(class_ids), dtype=torch.bool)
        is_train[train] = True
        others = rest[~is_train[rest]]
        extra = others[torch.randperm(len(others), generator=generator)[: spec.n_database - spec.n_train]]
        database = torch.sort(torch.cat([train, extra])).values
    return {"query": query, "train": train, "database": database}


def load_or_create_split(
    *,
    dataset: str,
    data_fingerprint: str,
    spec: SplitSpec,
    store_dir: Path | None,
    create: Any,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Return the stored split for ``spec``, creating and storing it on first use.

    ``create()`` returns the index dict. The stored file is checked against the
    data fingerprint, so a changed dataset cannot silently reuse old indices.
    """
    key = store.hash_config({"dataset": dataset, "spec": spec.as_dict(), "data": data_fingerprint})
    path = store_dir / "splits" / f"{dataset}-{key}.json" if store_dir is not None else None
    if path is not None and path.is_file():
        stored = store.read_json(path)
        if stored.get("data_fingerprint") != data_fingerprint:
            raise DataError(f"split file {path} was made from other data; delete it to make a new split")
        indices = {part: torch.tensor(stored[part], dtype=torch.int64) for part in ("query", "train", "database")}
        if _indices_hash(indices, data_fingerprint) != stored["hash"]:
            raise DataError(f"split file {path} is corrupt (hash mismatch); delete it to make a new split")
        return indices, _info(dataset, spec, data_fingerprint, indices)
    indices = create()
    info = _info(dataset, spec, data_fingerprint, indices)
    if path is not None:
        store.write_json(path, {**info, **{part: value.tolist() for part, value in indices.items()}})
    return indices, info


def _indices_hash(indices: dict[str, torch.Tensor], data_fingerprint: str) -> str:
    digest = hashlib.sha256(data_fingerprint.encode())
    for part in ("query", "train", "database"):
        digest.update(part.encode())
        digest.update(indices[part].numpy().tobytes())
    return digest.hexdigest()[:16]


def _info(dataset: str, spec: SplitSpec, data_fingerprint: str, indices: dict[str, torch.Tensor]) -> dict[str, Any]:
    return {
        "dataset": dataset,
        "protocol": "hashbench-seeded-v1",
        "spec": spec.as_dict(),
        "sizes": {part: int(len(value)) for part, value in indices.items()},
        "data_fingerprint": data_fingerprint,
        "hash": _indices_hash(indices, data_fingerprint),
    }
