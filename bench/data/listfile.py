"""Datasets in the list-file format of deep hashing work.

CIFAR-10, NUS-WIDE, FLICKR-25K, MS-COCO and ImageNet-100 are distributed this
way. A dataset root contains six text files, ``{train,test,database}_{img,label}.txt``,
and ``test`` is the query set. Each line of an ``*_img.txt`` file starts with
an image path relative to the root. Anything after the first whitespace is
ignored, unless the matching ``*_label.txt`` file is absent: then the rest of
the line is read as the label row. Each line of a ``*_label.txt`` file is a
multi-hot row of whitespace-separated 0/1 values, one column per class. A row
of zeros is valid (FLICKR-25K has them) and is relevant to no other item.

Loading a dataset parses the lists only. ``ListImageSet.images`` reads the
image files on demand, and ``verify_images`` opens them all up front.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor
from torchvision import transforms

from bench.data.base import RetrievalData
from models.errors import ConfigError, DataError

LIST_DATASETS: dict[str, int] = {
    "cifar-10": 10,
    "nus-wide": 21,
    "flickr-25k": 38,
    "ms-coco": 80,
    "imagenet-100": 100,
}
"""Class count of each dataset that ships in the list-file format."""

SPLIT_FILE_STEMS: dict[str, str] = {"query": "test", "train": "train", "database": "database"}
"""File-name stem of each retrieval set: ``query`` reads ``test_img.txt`` and ``test_label.txt``."""

PREPROCESSING: dict[str, str] = {
    "saat": "resize the shorter side to `resize` (aspect ratio kept), center crop `crop`",
    "dhta": "resize to exactly `resize` x `resize` (aspect ratio lost), center crop `crop`",
}
"""Named preprocessing choices.

Both resize bilinearly and output [0, 1] RGB without normalisation.
"""

_MAX_LISTED_FAILURES = 10


def build_transform(
    preprocessing: str = "saat", *, resize: int = 256, crop: int = 224
) -> Callable[[Image.Image], Tensor]:
    """Build the PIL-to-tensor transform of one ``PREPROCESSING`` choice.

    The result is a float32 (3, crop, crop) tensor in [0, 1]. Models normalise
    their input inside ``forward``, so no mean/std normalisation happens here.
    """
    if preprocessing not in PREPROCESSING:
        raise ConfigError(
            f"unknown preprocessing {preprocessing!r}; choose one of {sorted(PREPROCESSING)}"
        )
    if resize < 1 or crop < 1:
        raise ConfigError(f"resize and crop must be positive, got resize={resize}, crop={crop}")
    if crop > resize:
        # CenterCrop would pad the image with zeros instead of cropping it.
        raise ConfigError(f"crop {crop} is larger than resize {resize}; use crop <= resize")

    size: int | tuple[int, int] = resize if preprocessing == "saat" else (resize, resize)
    return transforms.Compose(
        [
            transforms.Resize(size, interpolation=transforms.InterpolationMode.BILINEAR),
            transforms.CenterCrop(crop),
            transforms.ToTensor(),
        ]
    )


def _read_rows(path: Path) -> list[str]:
    """Read the lines of a list file, one entry per line.

    Trailing blank lines are dropped. A blank line before the last entry
    raises ``DataError``, because it would shift every later row against the
    other file of the pair. Entry ``i`` is therefore on line ``i + 1``.
    """
    try:
        # utf-8-sig drops the byte order mark that some editors write.
        with open(path, encoding="utf-8-sig") as handle:
            lines = handle.read().splitlines()
    except FileNotFoundError:
        raise DataError(f"list file {path} not found") from None
    except OSError as error:
        raise DataError(
            f"list file {path} cannot be read ({error}); check that it is a readable file"
        ) from None
    except UnicodeDecodeError as error:
        raise DataError(
            f"list file {path} is not valid UTF-8 text ({error}); re-save it as UTF-8"
        ) from None

    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise DataError(
            f"list file {path} is empty; it must contain one line per image of this set"
        )
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            raise DataError(
                f"{path}: line {number} is blank; remove blank lines so that row i "
                f"of the image list and row i of the label file describe the same image"
            )
    return lines


def _resolve_inside(
    root: str, relative: str, parent_cache: dict[str, str]
) -> str | None:
    """Return the real path of ``root/relative``, or None if it lies outside ``root``.

    ``root`` must already be a real path. Resolving each parent folder once and
    then checking only the last component for a symlink gives the same result
    as ``os.path.realpath`` on the whole path at a fraction of the system calls.
    """
    if os.path.isabs(relative):
        return None
    parent, name = os.path.split(relative)
    if name in ("", ".", ".."):
        full = os.path.realpath(os.path.join(root, relative))
    else:
        real_parent = parent_cache.get(parent)
        if real_parent is None:
            real_parent = os.path.realpath(os.path.join(root, parent))
            parent_cache[parent] = real_parent
        full = os.path.join(real_parent, name)
        if os.path.islink(full):
            full = os.path.realpath(full)
    if full == root or not full.startswith(root.rstrip(os.sep) + os.sep):
        return None
    return full


def read_image_list(path: str | os.PathLike[str], root: str | os.PathLike[str]) -> list[str]:
    """Read the image paths of an ``*_img.txt`` file, relative to ``root``, as written.

    The first whitespace-separated token of each line is the path, so paths
    cannot contain spaces. A path that is absolute, or that leaves ``root``
    through ``..`` or a symlink, raises ``DataError``. The image files are not
    opened and need not exist.
    """
    path = Path(path)
    real_root = os.path.realpath(root)
    parent_cache: dict[str, str] = {}
    checked: set[str] = set()
    paths: list[str] = []
    for number, line in enumerate(_read_rows(path), start=1):
        relative = line.split(maxsplit=1)[0]
        if relative not in checked:
            if _resolve_inside(real_root, relative, parent_cache) is None:
                raise DataError(
                    f"{path}: line {number}: image path {relative!r} resolves outside the "
                    f"data root {real_root} (absolute path, '..' or symlink); list paths "
                    f"relative to the root, and keep the image files inside it"
                )
            checked.add(relative)
        paths.append(relative)
    return paths


def _parse_label_value(token: str) -> str | None:
    """Return "0" or "1" for a token whose numeric value is 0 or 1, such as "1.0", else None."""
    try:
        value = float(token)
    except ValueError:
        return None
    if value == 0.0:
        return "0"
    if value == 1.0:
        return "1"
    return None


def read_label_file(
    path: str | os.PathLike[str], n_classes: int, *, leading_path: bool = False
) -> Tensor:
    """Read a multi-hot label file into a float32 (rows, n_classes) tensor.

    Values must equal 0 or 1 ("1" and "1.0" are both accepted). With
    ``leading_path`` the first token of each line is an image path and is
    skipped, which reads the labels of an image list of "path 0 1 0 ..." lines.
    A row of the wrong width or a value other than 0/1 raises ``DataError``.
    """
    path = Path(path)
    binary = {"0", "1"}
    rows: list[str] = []
    for number, line in enumerate(_read_rows(path), start=1):
        tokens = line.split()
        if leading_path:
            tokens = tokens[1:]
        if len(tokens) != n_classes:
            raise DataError(
                f"{path}: line {number} has {len(tokens)} label values, expected {n_classes} "
                f"(one 0/1 column per class); check that the file belongs to a dataset "
                f"with {n_classes} classes"
            )
        if not binary.issuperset(tokens):
            normalised = []
            for column, token in enumerate(tokens, start=1):
                value = _parse_label_value(token)
                if value is None:
                    raise DataError(
                        f"{path}: line {number}, column {column}: label value {token!r} is "
                        f"not 0 or 1; write each label as 0 (absent) or 1 (present)"
                    )
                normalised.append(value)
            tokens = normalised
        rows.append("".join(tokens))

    # Each row is now exactly n_classes ASCII '0'/'1' characters.
    packed = bytearray("".join(rows), "ascii")
    digits = torch.frombuffer(packed, dtype=torch.uint8).view(len(rows), n_classes)
    return (digits - ord("0")).to(torch.float32)


class ListImageSet:
    """Images read from files on demand, with multi-hot labels held in memory.

    ``paths`` are relative to ``root``, as written in the list file. Use
    ``read_image_list`` to get them, because it rejects paths that leave the
    root. This constructor does not check them again. ``list_file`` is used
    only to name the list and line of a failing image in error messages.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        paths: Sequence[str],
        labels: Tensor,
        *,
        preprocessing: str = "saat",
        resize: int = 256,
        crop: int = 224,
        list_file: str | os.PathLike[str] | None = None,
        workers: int | None = None,
    ) -> None:
        if labels.dim() != 2 or labels.shape[0] != len(paths):
            raise DataError(
                f"labels of shape {tuple(labels.shape)} do not match {len(paths)} image "
                f"paths; expected ({len(paths)}, classes)"
            )
        self.root = Path(root)
        self.paths = list(paths)
        self.labels = labels.to(torch.float32)
        self.preprocessing = preprocessing
        self.resize = resize
        self.crop = crop
        self.list_file = Path(list_file) if list_file is not None else None
        self.workers = workers if workers is not None else min(8, os.cpu_count() or 1)
        self.transform = build_transform(preprocessing, resize=resize, crop=crop)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (3, self.crop, self.crop)

    def describe_item(self, index: int) -> str:
        """Name item ``index`` for error messages: its path and, if known, its list line."""
        where = f"image {self.paths[index]!r}"
        if self.list_file is not None:
            where += f" (line {index + 1} of {self.list_file})"
        return where

    def load_image(self, index: int) -> Tensor:
        """Read and preprocess one image. A missing or unreadable file raises ``DataError``."""
        file = self.root / self.paths[index]
        try:
            with Image.open(file) as image:
                rgb = image.convert("RGB")
        except FileNotFoundError:
            raise DataError(
                f"{self.describe_item(index)} not found at {file}; restore the file "
                f"or remove its line from the image list and the label file"
            ) from None
        except (OSError, SyntaxError, ValueError) as error:
            # PIL raises UnidentifiedImageError (an OSError) for unknown formats,
            # OSError for truncated files and SyntaxError for some broken headers.
            raise DataError(
                f"{self.describe_item(index)} at {file} cannot be decoded ({error}); "
                f"replace the file, or run verify_images to list every bad file"
            ) from None
        return self.transform(rgb)

    def images(self, indices: Tensor) -> Tensor:
        """Load the images at ``indices`` as a float32 (n, 3, crop, crop) tensor in [0, 1].

        PIL releases the GIL while it decodes, so a batch is read by a pool of
        ``workers`` threads.
        """
        order = torch.as_tensor(indices).reshape(-1).tolist()
        if not order:
            return torch.empty((0, *self.image_shape), dtype=torch.float32)
        if len(order) == 1 or self.workers <= 1:
            return torch.stack([self.load_image(index) for index in order])
        with ThreadPoolExecutor(max_workers=min(self.workers, len(order))) as pool:
            return torch.stack(list(pool.map(self.load_image, order)))

    def subset(self, indices: Tensor) -> ListImageSet:
        """Return the items at ``indices`` as a new set with the same preprocessing.

        The subset has no ``list_file``, because its rows no longer match the
        list's line numbers.
        """
        order = torch.as_tensor(indices).reshape(-1)
        return ListImageSet(
            self.root,
            [self.paths[index] for index in order.tolist()],
            self.labels[order],
            preprocessing=self.preprocessing,
            resize=self.resize,
            crop=self.crop,
            workers=self.workers,
        )


def _check_image(file: Path, decode: bool) -> str | None:
    """Return why ``file`` cannot be read as an image, or None if it can."""
    try:
        with Image.open(file) as image:
            if decode:
                image.load()
            else:
                image.verify()
    except FileNotFoundError:
        return "file not found"
    except (OSError, SyntaxError, ValueError) as error:
        return f"cannot be decoded ({error})"
    return None


def _collect_image_failures(
    image_set: ListImageSet, decode: bool, checked: set[str]
) -> list[str]:
    """Check the files of ``image_set`` whose paths are not yet in ``checked``.

    The checked paths are added to ``checked``. Returns one message per file
    that cannot be read.
    """
    first_index: dict[str, int] = {}
    for index, relative in enumerate(image_set.paths):
        if relative not in checked:
            first_index.setdefault(relative, index)
    checked.update(first_index)

    files = [image_set.root / relative for relative in first_index]
    with ThreadPoolExecutor(max_workers=max(1, image_set.workers)) as pool:
        reasons = list(pool.map(lambda file: _check_image(file, decode), files))
    return [
        f"{image_set.describe_item(index)}: {reason}"
        for index, reason in zip(first_index.values(), reasons)
        if reason is not None
    ]


def _raise_image_failures(failures: list[str], checked: int, root: Path) -> None:
    if not failures:
        return
    listed = "\n  ".join(failures[:_MAX_LISTED_FAILURES])
    more = len(failures) - _MAX_LISTED_FAILURES
    tail = f"\n  ... and {more} more" if more > 0 else ""
    raise DataError(
        f"{len(failures)} of {checked} image files under {root} cannot be read:\n  "
        f"{listed}{tail}\nrestore or replace these files, or remove their lines from "
        f"the image list and the label file"
    )


def verify_images(image_set: ListImageSet, *, decode: bool = False) -> int:
    """Open every distinct image file of ``image_set`` and return how many were checked.

    Without ``decode`` each file gets PIL's ``Image.verify()``, which reads the
    header and, for PNG, checks the chunk checksums. It does not decode JPEG
    data, so a truncated JPEG passes (checked with Pillow 13.0).
    ``decode=True`` decodes every image fully and catches those too, at the
    cost of a full read. All failures are collected and raised as one
    ``DataError`` that lists the first few.
    """
    checked: set[str] = set()
    failures = _collect_image_failures(image_set, decode, checked)
    _raise_image_failures(failures, len(checked), image_set.root)
    return len(checked)


def _list_folder(root: Path) -> str:
    """Describe the contents of ``root`` for a missing-file message."""
    names = sorted(entry.name + ("/" if entry.is_dir() else "") for entry in root.iterdir())
    if not names:
        return "the folder is empty"
    listed = ", ".join(names[:20])
    more = f" and {len(names) - 20} more" if len(names) > 20 else ""
    return f"the folder contains {listed}{more}"


def _read_set(root: Path, stem: str, n_classes: int) -> tuple[list[str], Tensor, Path]:
    """Read the paths and labels of one set, taking the labels from the image list if needed."""
    image_file = root / f"{stem}_img.txt"
    label_file = root / f"{stem}_label.txt"
    if not image_file.is_file():
        raise DataError(
            f"image list {image_file.name} not found in {root}; {_list_folder(root)}. "
            f"A list-format dataset needs train, test and database image lists and label files"
        )

    paths = read_image_list(image_file, root)
    if label_file.is_file():
        labels = read_label_file(label_file, n_classes)
        if labels.shape[0] != len(paths):
            raise DataError(
                f"{image_file} has {len(paths)} images but {label_file} has "
                f"{labels.shape[0]} label rows; each image needs exactly one label row, "
                f"in the same order"
            )
        return paths, labels, image_file

    first_line = _read_rows(image_file)[0]
    if len(first_line.split()) == 1:
        raise DataError(
            f"label file {label_file.name} not found in {root}, and {image_file.name} "
            f"has no labels after the image paths; {_list_folder(root)}. Add "
            f"{label_file.name}, or write each line of {image_file.name} as "
            f"'path 0 1 0 ...'"
        )
    return paths, read_label_file(image_file, n_classes, leading_path=True), image_file


def _split_hash(n_classes: int, sets: dict[str, ListImageSet]) -> str:
    """Hash the paths, as written, and label rows of each set, in query/train/database order.

    The root folder is not part of the hash, so moving a dataset keeps it.
    """
    digest = hashlib.sha256()
    digest.update(f"list-files classes={n_classes}\n".encode())
    for name, image_set in sets.items():
        digest.update(f"set={name} size={len(image_set)}\n".encode())
        bits = image_set.labels.to(torch.uint8).add_(ord("0")).numpy()
        for relative, row in zip(image_set.paths, bits):
            digest.update(relative.encode())
            digest.update(b"\t")
            digest.update(row.tobytes())
            digest.update(b"\n")
    return digest.hexdigest()


def _count_zero_label_rows(labels: Tensor) -> int:
    return int((labels.sum(dim=1) == 0).sum())


def load_list_dataset(
    root: str | os.PathLike[str],
    name: str,
    *,
    preprocessing: str = "saat",
    resize: int = 256,
    crop: int = 224,
    verify: bool = False,
    workers: int | None = None,
) -> RetrievalData:
    """Load a list-format dataset from ``root`` as query (test), train and database sets.

    ``name`` is a key of ``LIST_DATASETS`` (case is ignored) and fixes the
    label width. Without ``verify`` no image file is opened, and a missing or
    broken image raises ``DataError`` only when ``images()`` reads it. With
    ``verify`` every distinct image file gets the header check of
    ``verify_images`` up front, and all failures are raised together.
    """
    dataset = name.lower()
    if dataset not in LIST_DATASETS:
        raise ConfigError(
            f"unknown list-format dataset {name!r}; choose one of {sorted(LIST_DATASETS)}"
        )
    n_classes = LIST_DATASETS[dataset]
    # Absolute, so that images still load after the working directory changes.
    root = Path(root).absolute()
    if not root.exists():
        raise DataError(
            f"data root {root} not found; pass the folder that contains "
            f"train_img.txt, test_img.txt and database_img.txt"
        )
    if not root.is_dir():
        raise DataError(
            f"data root {root} is not a folder; pass the folder that contains the lists"
        )
    # Check the transform settings before parsing thousands of list lines.
    build_transform(preprocessing, resize=resize, crop=crop)

    sets: dict[str, ListImageSet] = {}
    for set_name, stem in SPLIT_FILE_STEMS.items():
        paths, labels, image_file = _read_set(root, stem, n_classes)
        sets[set_name] = ListImageSet(
            root,
            paths,
            labels,
            preprocessing=preprocessing,
            resize=resize,
            crop=crop,
            list_file=image_file,
            workers=workers,
        )

    if verify:
        # The training paths are usually database paths too, so each file is checked once.
        checked: set[str] = set()
        failures: list[str] = []
        for image_set in sets.values():
            failures += _collect_image_failures(image_set, False, checked)
        _raise_image_failures(failures, len(checked), root)

    split = {
        "dataset": dataset,
        "protocol": "list-files",
        "root": str(root),
        "sizes": {set_name: len(image_set) for set_name, image_set in sets.items()},
        "hash": _split_hash(n_classes, sets),
        "zero_label_rows": {
            set_name: _count_zero_label_rows(image_set.labels)
            for set_name, image_set in sets.items()
        },
        "preprocessing": {"name": preprocessing, "resize": resize, "crop": crop},
    }
    return RetrievalData(
        name=dataset,
        n_classes=n_classes,
        query=sets["query"],
        train=sets["train"],
        database=sets["database"],
        split=split,
    )


def split_statistics(data: RetrievalData) -> dict[str, Any]:
    """Summarise a split: sizes, zero-label rows, label counts and set overlaps.

    The overlap entries compare image paths, so they are None unless all three
    sets have ``paths`` (as ``ListImageSet`` does). ``train_in_database`` is
    True when every training path is also a database path.
    ``query_database_disjoint`` is True when no query path is a database path.
    """
    sets = {"query": data.query, "train": data.train, "database": data.database}
    statistics: dict[str, Any] = {
        "n_classes": data.n_classes,
        "sizes": {name: len(image_set) for name, image_set in sets.items()},
        "zero_label_rows": {
            name: _count_zero_label_rows(image_set.labels) for name, image_set in sets.items()
        },
        "mean_labels_per_row": {
            name: float(image_set.labels.sum(dim=1).mean()) if len(image_set) else 0.0
            for name, image_set in sets.items()
        },
        "distinct_database_labels": int(torch.unique(data.database.labels, dim=0).shape[0]),
        "distinct_paths": None,
        "train_in_database": None,
        "query_database_disjoint": None,
    }

    path_sets = {name: getattr(image_set, "paths", None) for name, image_set in sets.items()}
    if all(paths is not None for paths in path_sets.values()):
        distinct = {name: set(paths) for name, paths in path_sets.items()}
        statistics["distinct_paths"] = {name: len(paths) for name, paths in distinct.items()}
        statistics["train_in_database"] = distinct["train"] <= distinct["database"]
        statistics["query_database_disjoint"] = distinct["query"].isdisjoint(distinct["database"])
    return statistics
