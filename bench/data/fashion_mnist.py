"""Fashion-MNIST from IDX files: Debian's package, a folder of yours, or torchvision.

Search order: the ``data_root`` argument (``--data-root`` on the command line),
the ``HASHBENCH_DATA_ROOT`` environment variable, Debian's
``dataset-fashion-mnist`` package (/usr/share/datasets/fashion-mnist), then a
cache folder. When none has the files, torchvision's downloader fills the
cache folder; offline, loading stops with a message that names the package
and the option.
"""

from __future__ import annotations

import gzip
import logging
import os
from pathlib import Path

import numpy as np
import torch

from models.errors import DataError

log = logging.getLogger(__name__)

DEBIAN_ROOT = Path("/usr/share/datasets/fashion-mnist")
ENVIRONMENT_VARIABLE = "HASHBENCH_DATA_ROOT"
CLASS_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
EXPECTED_COUNTS = {"train": 60000, "test": 10000}


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "hashbench" / "fashion-mnist"


def _find_file(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz", folder / "FashionMNIST" / "raw" / stem,
                      folder / "FashionMNIST" / "raw" / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _files_in(folder: Path) -> dict[str, Path] | None:
    found = {key: _find_file(folder, stem) for key, stem in FILES.items()}
    if all(found.values()):
        return found  # type: ignore[return-value]
    return None


def locate(data_root: str | Path | None = None, *, download: bool = True) -> dict[str, Path]:
    """Return the paths of the four IDX files, downloading them only as a last resort."""
    explicit = data_root or os.environ.get(ENVIRONMENT_VARIABLE)
    if explicit:
        folder = Path(explicit).expanduser()
        found = _files_in(folder)
        if found is None:
            raise DataError(
                f"Fashion-MNIST IDX files not found in {folder} (from "
                f"{'--data-root' if data_root else ENVIRONMENT_VARIABLE}); expected "
                f"{', '.join(FILES.values())} (optionally .gz). Point the option at the folder "
                "that holds them, or install Debian's package: apt-get install dataset-fashion-mnist"
            )
        return found
    for folder in (DEBIAN_ROOT, default_cache_dir()):
        found = _files_in(folder)
        if found is not None:
            return found
    if download:
        cache = default_cache_dir()
        log.info("Fashion-MNIST not found locally; downloading with torchvision into %s", cache)
        try:
            from torchvision.datasets import FashionMNIST

            FashionMNIST(str(cache), train=True, download=True)
            FashionMNIST(str(cache), train=False, download=True)
        except Exception as error:  # network errors come in many types
            raise DataError(
                f"Fashion-MNIST not found and the download failed ({type(error).__name__}: {error}). "
                "Install Debian's package (apt-get install dataset-fashion-mnist) or pass "
                f"--data-root / set {ENVIRONMENT_VARIABLE} to a folder with the IDX files"
            ) from error
        found = _files_in(cache)
        if found is not None:
            return found
    raise DataError(
        "Fashion-MNIST not found. Install Debian's package (apt-get install dataset-fashion-mnist) "
        f"or pass --data-root / set {ENVIRONMENT_VARIABLE} to a folder with the IDX files"
    )


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed) of unsigned bytes."""
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as handle:
            data = handle.read()
    except (OSError, EOFError) as error:
        raise DataError(f"cannot read {path}: {error}; reinstall the file (apt-get install --reinstall dataset-fashion-mnist)") from error
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataError(f"{path} is not an unsigned-byte IDX file (bad magic number); the file is corrupt")
    n_dims = data[3]
    header = 4 + 4 * n_dims
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(n_dims)]
    expected = int(np.prod(dims)) if dims else 0
    if len(data) - header != expected:
        raise DataError(
            f"{path} is truncated or corrupt: its header promises {expected} bytes of data "
            f"for shape {dims}, but {len(data) - header} follow"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def load_arrays(data_root: str | Path | None = None, *, download: bool = True) -> tuple[torch.Tensor, torch.Tensor, dict[str, str]]:
    """Return all 70,000 images (uint8, N x 1 x 28 x 28), labels (int64) and the file paths.

    The official training images come first, then the test images.
    """
    files = locate(data_root, download=download)
    parts_images, parts_labels = [], []
    for part in ("train", "test"):
        images = read_idx(files[f"{part}_images"])
        labels = read_idx(files[f"{part}_labels"])
        if images.shape[0] != EXPECTED_COUNTS[part] or images.shape[1:] != (28, 28):
            raise DataError(
                f"{files[f'{part}_images']} has shape {images.shape}; Fashion-MNIST's {part} "
                f"images are ({EXPECTED_COUNTS[part]}, 28, 28)"
            )
        if labels.shape != (images.shape[0],) or labels.max() > 9:
            raise DataError(
                f"{files[f'{part}_labels']} has shape {labels.shape} and maximum {labels.max()}; "
                f"expected {images.shape[0]} labels in 0..9"
            )
        parts_images.append(torch.from_numpy(images.copy()))
        parts_labels.append(torch.from_numpy(labels.astype(np.int64)))
    images = torch.cat(parts_images).unsqueeze(1)
    labels = torch.cat(parts_labels)
    return images, labels, {key: str(path) for key, path in files.items()}
