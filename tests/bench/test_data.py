"""Fashion-MNIST loading, the split protocol and the mosaic variant."""

from __future__ import annotations

import gzip
import shutil

import pytest
import torch

from bench.data import fashion_mnist, load_dataset
from bench.data.fashion_mnist import FILES, locate, read_idx
from bench.data.splits import SplitSpec
from models.errors import ConfigError, DataError
from tests.bench.conftest import requires_fashion_mnist


def _write_idx(path, array_bytes: bytes, dims: list[int]) -> None:
    header = bytes([0, 0, 0x08, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array_bytes)


def test_read_idx_round_trip(tmp_path):
    path = tmp_path / "x.gz"
    _write_idx(path, bytes(range(6)), [2, 3])
    array = read_idx(path)
    assert array.shape == (2, 3)
    assert array.tolist() == [[0, 1, 2], [3, 4, 5]]


def test_read_idx_truncated_file(tmp_path):
    path = tmp_path / "x.gz"
    _write_idx(path, bytes(range(5)), [2, 3])
    with pytest.raises(DataError, match="truncated or corrupt"):
        read_idx(path)


def test_read_idx_bad_magic(tmp_path):
    path = tmp_path / "x"
    path.write_bytes(b"\x01\x02\x03\x04" + bytes(8))
    with pytest.raises(DataError, match="magic number"):
        read_idx(path)


def test_missing_files_name_package_and_option(tmp_path):
    with pytest.raises(DataError) as error:
        locate(tmp_path, download=False)
    message = str(error.value)
    assert "dataset-fashion-mnist" in message
    assert "--data-root" in message
    assert str(tmp_path) in message


def test_environment_variable_folder(tmp_path, monkeypatch):
    monkeypatch.setenv(fashion_mnist.ENVIRONMENT_VARIABLE, str(tmp_path))
    with pytest.raises(DataError, match=fashion_mnist.ENVIRONMENT_VARIABLE):
        locate(download=False)


@requires_fashion_mnist
def test_corrupt_copy_rejected(tmp_path):
    source = locate(download=False)
    for key, path in source.items():
        shutil.copy(path, tmp_path / path.name)
    broken = tmp_path / source["test_labels"].name
    broken.write_bytes(broken.read_bytes()[:100])
    with pytest.raises(DataError, match="t10k-labels"):
        fashion_mnist.load_arrays(tmp_path, download=False)


@requires_fashion_mnist
def test_split_sizes_classes_and_disjointness(tmp_path):
    data = load_dataset("fashion-mnist", spec=SplitSpec(n_query=200, n_train=500), store_dir=tmp_path)
    assert len(data.query) == 200
    assert len(data.train) == 500
    assert len(data.database) == 70000 - 200
    assert data.query.labels.sum(0).tolist() == [20.0] * 10
    assert data.train.labels.sum(0).tolist() == [50.0] * 10
    assert data.split["sizes"] == {"query": 200, "train": 500, "database": 69800}


@requires_fashion_mnist
def test_split_stored_and_reused(tmp_path):
    spec = SplitSpec(n_query=100, n_train=300, seed=3)
    first = load_dataset("fashion-mnist", spec=spec, store_dir=tmp_path)
    files = list((tmp_path / "splits").glob("*.json"))
    assert len(files) == 1
    second = load_dataset("fashion-mnist", spec=spec, store_dir=tmp_path)
    assert second.split_hash == first.split_hash
    assert torch.equal(second.query.pixels, first.query.pixels)
    other = load_dataset("fashion-mnist", spec=SplitSpec(n_query=100, n_train=300, seed=4), store_dir=tmp_path)
    assert other.split_hash != first.split_hash


@requires_fashion_mnist
def test_tampered_split_file_rejected(tmp_path):
    spec = SplitSpec(n_query=100, n_train=300)
    load_dataset("fashion-mnist", spec=spec, store_dir=tmp_path)
    path = next((tmp_path / "splits").glob("*.json"))
    path.write_text(path.read_text().replace('"query": [', '"query": [1, ', 1))
    with pytest.raises(DataError, match="corrupt"):
        load_dataset("fashion-mnist", spec=spec, store_dir=tmp_path)


@requires_fashion_mnist
def test_mosaic_labels_are_union_of_tiles(tmp_path):
    data = load_dataset("fashion-mnist-mosaic", spec=SplitSpec(n_query=50, n_train=100, n_database=200),
                        store_dir=tmp_path)
    assert data.image_shape == (1, 56, 56)
    counts = data.database.labels.sum(1)
    assert set(counts.tolist()) <= {1.0, 2.0}
    assert (counts == 2).any()
    assert len(data.train) == 100
    assert len(data.database) == 200
    assert data.query.labels.shape == (50, 10)


def test_invalid_split_sizes():
    with pytest.raises(ConfigError, match="n_query"):
        SplitSpec(n_query=0)
    with pytest.raises(ConfigError, match="n_database"):
        SplitSpec(n_database=-5)


def test_unknown_dataset_lists_names():
    with pytest.raises(ConfigError, match="fashion-mnist"):
        load_dataset("fashion-mnsit")


def test_list_dataset_needs_folder():
    with pytest.raises(ConfigError, match="--data-root"):
        load_dataset("flickr-25k")


def test_files_cover_both_parts():
    assert set(FILES) == {"train_images", "train_labels", "test_images", "test_labels"}
