"""Datasets: real Fashion-MNIST (default), its multi-label mosaic variant, and list-format folders.

``load_dataset`` returns a ``RetrievalData`` whose split is seeded, stored
and hashed (see ``bench.data.splits``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from bench.data.base import RetrievalData
from bench.data.splits import SplitSpec, fingerprint, load_or_create_split, make_split
from models.errors import ConfigError
from models.imageset import TensorImageSet


@dataclass(frozen=True)
class DatasetInfo:
    """A dataset's class count and its default top-k for MAP (None: whole database)."""

    name: str
    n_classes: int
    topk: int | None
    image_size: int
    channels: int
    multi_label: bool


DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo("fashion-mnist", 10, 1000, 28, 1, False),
        DatasetInfo("fashion-mnist-mosaic", 10, 1000, 56, 1, True),
        # top-k 5,000 as in SAAT for the multi-label sets; 1,000 for ImageNet-100 (HashNet, DHTA);
        # the whole database for CIFAR-10 (the common convention).
        DatasetInfo("cifar-10", 10, None, 224, 3, False),
        DatasetInfo("nus-wide", 21, 5000, 224, 3, True),
        DatasetInfo("flickr-25k", 38, 5000, 224, 3, True),
        DatasetInfo("ms-coco", 80, 5000, 224, 3, True),
        DatasetInfo("imagenet-100", 100, 1000, 224, 3, False),
    )
}

DEFAULT_MOSAIC_DATABASE = 15000


def dataset_info(name: str) -> DatasetInfo:
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")
    return DATASETS[name]


def load_dataset(
    name: str,
    *,
    data_root: str | Path | None = None,
    spec: SplitSpec | None = None,
    store_dir: Path | None = None,
    download: bool = True,
) -> RetrievalData:
    """Load ``name`` with the split ``spec``, storing the split under ``store_dir``."""
    info = dataset_info(name)
    spec = spec or SplitSpec()
    if name == "fashion-mnist":
        return _load_fashion_mnist(data_root, spec, store_dir, download)
    if name == "fashion-mnist-mosaic":
        return _load_mosaic(data_root, spec, store_dir, download)
    if data_root is None:
        raise ConfigError(
            f"dataset {name!r} loads from a local folder in list format; pass --data-root "
            "with train/test/database _img.txt and _label.txt files"
        )
    from bench.data.listfile import load_list_dataset

    data = load_list_dataset(data_root, name)
    data.split.setdefault("topk", info.topk)
    return data


def _load_fashion_mnist(data_root, spec: SplitSpec, store_dir, download) -> RetrievalData:
    from bench.data import fashion_mnist

    images, class_ids, _ = fashion_mnist.load_arrays(data_root, download=download)
    n_train_official = fashion_mnist.EXPECTED_COUNTS["train"]
    all_indices = torch.arange(len(class_ids))
    data_print = fingerprint(images, class_ids)
    indices, info = load_or_create_split(
        dataset="fashion-mnist",
        data_fingerprint=data_print,
        spec=spec,
        store_dir=store_dir,
        create=lambda: make_split(
            class_ids, all_indices[n_train_official:], all_indices[:n_train_official], spec
        ),
    )
    labels = torch.nn.functional.one_hot(class_ids, 10).float()
    sets = {part: TensorImageSet(images[value], labels[value]) for part, value in indices.items()}
    info["topk"] = DATASETS["fashion-mnist"].topk
    return RetrievalData("fashion-mnist", 10, sets["query"], sets["train"], sets["database"], info)


def _load_mosaic(data_root, spec: SplitSpec, store_dir, download) -> RetrievalData:
    from bench.data import fashion_mnist
    from bench.data.mosaic import build_mosaics

    images, class_ids, _ = fashion_mnist.load_arrays(data_root, download=download)
    n_train_official = fashion_mnist.EXPECTED_COUNTS["train"]
    all_indices = torch.arange(len(class_ids))
    n_database = spec.n_database or DEFAULT_MOSAIC_DATABASE
    if n_database < spec.n_train:
        raise ConfigError(f"n_database={n_database} must be at least n_train={spec.n_train}")
    generator = torch.Generator().manual_seed(spec.seed)
    query_pixels, query_labels = build_mosaics(
        images, class_ids, all_indices[n_train_official:], spec.n_query, generator
    )
    database_pixels, database_labels = build_mosaics(
        images, class_ids, all_indices[:n_train_official], n_database, generator
    )
    train_indices = torch.sort(torch.randperm(n_database, generator=generator)[: spec.n_train]).values
    data_print = fingerprint(images, class_ids, query_pixels, database_pixels)
    pool = {"query": torch.arange(spec.n_query), "train": train_indices, "database": torch.arange(n_database)}
    indices, info = load_or_create_split(
        dataset="fashion-mnist-mosaic", data_fingerprint=data_print, spec=spec, store_dir=store_dir,
        create=lambda: pool,
    )
    info["topk"] = DATASETS["fashion-mnist-mosaic"].topk
    query = TensorImageSet(query_pixels, query_labels)
    database = TensorImageSet(database_pixels, database_labels)
    return RetrievalData(
        "fashion-mnist-mosaic", 10, query, database.subset(indices["train"]), database, info
    )
