"""Tests of the list-file dataset loader.

Most tests build small folders of generated images. The FLICKR-25K tests read
the field's real list files, without images, when HASHBENCH_FLICKR25K_LISTS
names their folder.
"""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from bench.data.listfile import (
    LIST_DATASETS,
    build_transform,
    load_list_dataset,
    read_image_list,
    read_label_file,
    split_statistics,
    verify_images,
)
from models.errors import ConfigError, DataError
from models.imageset import ImageSet, TensorImageSet, iterate_batches

CLASSES = 10  # cifar-10, the dataset name used by the generated folders

# Fill colours of the generated images. Neighbouring rows differ, so tests can check the order.
COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255)]


def one_hot(*classes: int, width: int = CLASSES) -> list[int]:
    return [1 if column in classes else 0 for column in range(width)]


def write_image(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def write_set(
    root: Path,
    stem: str,
    entries: list[tuple[str, list[int]]],
    *,
    images: bool = True,
    inline_labels: bool = False,
) -> None:
    """Write ``{stem}_img.txt``, ``{stem}_label.txt`` and, if ``images`` is True, the images."""
    if inline_labels:
        image_lines = [f"{path} " + " ".join(map(str, row)) for path, row in entries]
    else:
        image_lines = [path for path, _ in entries]
        label_lines = [" ".join(map(str, row)) for _, row in entries]
        (root / f"{stem}_label.txt").write_text("\n".join(label_lines) + "\n")
    (root / f"{stem}_img.txt").write_text("\n".join(image_lines) + "\n")

    if images:
        for index, (path, _) in enumerate(entries):
            file = root / path
            if not file.exists():
                write_image(file, COLOURS[index % len(COLOURS)])


def make_dataset(root: Path, *, images: bool = True, inline_labels: bool = False) -> Path:
    """Write a cifar-10 folder of 2 query, 3 train and 4 database rows.

    The train rows are drawn from the database, with db0 listed twice.
    """
    root.mkdir(parents=True, exist_ok=True)
    database = [
        ("images/db0.png", one_hot(0)),
        ("images/db1.png", one_hot(1, 2)),
        ("images/db2.png", one_hot()),
        ("images/db3.png", one_hot(1, 2)),
    ]
    query = [("images/q0.png", one_hot(0)), ("images/q1.png", one_hot())]
    train = [database[0], database[1], database[0]]
    write_set(root, "database", database, images=images, inline_labels=inline_labels)
    write_set(root, "test", query, images=images, inline_labels=inline_labels)
    write_set(root, "train", train, images=images, inline_labels=inline_labels)
    return root


@pytest.fixture
def dataset_root(tmp_path: Path) -> Path:
    return make_dataset(tmp_path / "cifar")


def error_of(call, *args, **kwargs) -> str:
    with pytest.raises(DataError) as caught:
        call(*args, **kwargs)
    return str(caught.value)


# ----------------------------------------------------------------------------------------
# Loading and the split record


def test_dataset_class_counts() -> None:
    assert LIST_DATASETS == {
        "cifar-10": 10,
        "nus-wide": 21,
        "flickr-25k": 38,
        "ms-coco": 80,
        "imagenet-100": 100,
    }


def test_load_sizes_and_labels(dataset_root: Path) -> None:
    data = load_list_dataset(dataset_root, "cifar-10")

    assert data.name == "cifar-10"
    assert data.n_classes == CLASSES
    assert len(data.query) == 2
    assert len(data.train) == 3
    assert len(data.database) == 4
    assert data.database.labels.dtype == torch.float32
    assert data.database.labels.shape == (4, CLASSES)
    assert data.database.labels[1].tolist() == [float(v) for v in one_hot(1, 2)]
    assert data.train.paths == ["images/db0.png", "images/db1.png", "images/db0.png"]
    for image_set in (data.query, data.train, data.database):
        assert isinstance(image_set, ImageSet)


def test_load_split_record(dataset_root: Path) -> None:
    data = load_list_dataset(dataset_root, "CIFAR-10")
    split = data.split

    assert split["dataset"] == "cifar-10"
    assert split["protocol"] == "list-files"
    assert split["root"] == str(dataset_root)
    assert split["sizes"] == {"query": 2, "train": 3, "database": 4}
    assert split["zero_label_rows"] == {"query": 1, "train": 0, "database": 1}
    assert split["preprocessing"] == {"name": "saat", "resize": 256, "crop": 224}
    assert len(split["hash"]) == 64
    int(split["hash"], 16)
    assert data.split_hash == split["hash"]


def test_hash_ignores_root_location(dataset_root: Path, tmp_path: Path) -> None:
    moved = tmp_path / "moved"
    shutil.copytree(dataset_root, moved)

    assert load_list_dataset(moved, "cifar-10").split_hash == load_list_dataset(
        dataset_root, "cifar-10"
    ).split_hash


def test_hash_changes_with_label(dataset_root: Path) -> None:
    before = load_list_dataset(dataset_root, "cifar-10").split_hash
    label_file = dataset_root / "test_label.txt"
    rows = label_file.read_text().splitlines()
    rows[1] = " ".join(map(str, one_hot(9)))
    label_file.write_text("\n".join(rows) + "\n")

    assert load_list_dataset(dataset_root, "cifar-10").split_hash != before


def test_hash_changes_with_path(dataset_root: Path) -> None:
    before = load_list_dataset(dataset_root, "cifar-10").split_hash
    write_image(dataset_root / "images/other.png", COLOURS[0])
    image_file = dataset_root / "test_img.txt"
    image_file.write_text(image_file.read_text().replace("images/q1.png", "images/other.png"))

    assert load_list_dataset(dataset_root, "cifar-10").split_hash != before


def test_hash_ignores_preprocessing(dataset_root: Path) -> None:
    saat = load_list_dataset(dataset_root, "cifar-10")
    dhta = load_list_dataset(dataset_root, "cifar-10", preprocessing="dhta")

    assert saat.split_hash == dhta.split_hash
    assert dhta.split["preprocessing"]["name"] == "dhta"


def test_load_opens_no_images(dataset_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail_open(*args, **kwargs):
        raise AssertionError("load_list_dataset opened an image without verify=True")

    monkeypatch.setattr(Image, "open", fail_open)

    data = load_list_dataset(dataset_root, "cifar-10")

    assert len(data.database) == 4


def test_load_without_image_files(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "lists-only", images=False)

    data = load_list_dataset(root, "cifar-10")

    assert data.split["sizes"] == {"query": 2, "train": 3, "database": 4}


def test_inline_labels_without_label_file(tmp_path: Path, dataset_root: Path) -> None:
    root = make_dataset(tmp_path / "inline", inline_labels=True)

    data = load_list_dataset(root, "cifar-10")
    reference = load_list_dataset(dataset_root, "cifar-10")

    assert not (root / "test_label.txt").exists()
    assert data.database.paths == reference.database.paths
    assert torch.equal(data.database.labels, reference.database.labels)
    assert torch.equal(data.train.labels, reference.train.labels)
    assert data.split_hash == reference.split_hash


def test_label_file_wins_over_inline_labels(dataset_root: Path) -> None:
    image_file = dataset_root / "test_img.txt"
    lines = [f"{path} " + " ".join(["1"] * CLASSES) for path in image_file.read_text().split()]
    image_file.write_text("\n".join(lines) + "\n")

    data = load_list_dataset(dataset_root, "cifar-10")

    assert data.query.paths == ["images/q0.png", "images/q1.png"]
    assert data.query.labels[1].sum() == 0


def test_windows_line_endings_and_bom(dataset_root: Path) -> None:
    for name in ("test_img.txt", "test_label.txt"):
        file = dataset_root / name
        text = file.read_text().replace("\n", "\r\n")
        file.write_bytes(b"\xef\xbb\xbf" + text.encode())

    data = load_list_dataset(dataset_root, "cifar-10")

    assert data.query.paths == ["images/q0.png", "images/q1.png"]
    assert data.query.labels.shape == (2, CLASSES)


def test_decimal_label_values_accepted(tmp_path: Path) -> None:
    file = tmp_path / "labels.txt"
    file.write_text("1.0 0.0 0\n0 1 0.00\n")

    labels = read_label_file(file, 3)

    assert labels.tolist() == [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]


# ----------------------------------------------------------------------------------------
# Images and preprocessing


def test_images_shape_range_and_order(dataset_root: Path) -> None:
    data = load_list_dataset(dataset_root, "cifar-10")

    batch = data.database.images(torch.tensor([2, 0, 1]))

    assert data.database.image_shape == (3, 224, 224)
    assert batch.shape == (3, 3, 224, 224)
    assert batch.dtype == torch.float32
    assert batch.min() >= 0.0
    assert batch.max() <= 1.0
    # db2, db0 and db1 are filled with COLOURS[2], COLOURS[0] and COLOURS[1].
    for row, colour in zip(batch, (COLOURS[2], COLOURS[0], COLOURS[1])):
        expected = torch.tensor(colour, dtype=torch.float32) / 255
        assert torch.allclose(row.mean(dim=(1, 2)), expected, atol=1e-3)


def test_images_same_with_and_without_threads(dataset_root: Path) -> None:
    data = load_list_dataset(dataset_root, "cifar-10", workers=1)
    threaded = load_list_dataset(dataset_root, "cifar-10", workers=4)
    indices = torch.tensor([3, 1, 2, 0])

    assert torch.equal(data.database.images(indices), threaded.database.images(indices))


def test_images_empty_and_single(dataset_root: Path) -> None:
    data = load_list_dataset(dataset_root, "cifar-10")

    assert data.query.images(torch.tensor([], dtype=torch.long)).shape == (0, 3, 224, 224)
    assert data.query.images(torch.tensor([1])).shape == (1, 3, 224, 224)


def test_iterate_batches_over_list_set(dataset_root: Path) -> None:
    data = load_list_dataset(dataset_root, "cifar-10", resize=32, crop=32)

    batches = list(iterate_batches(data.database, batch_size=3))

    assert [images.shape[0] for images, _, _ in batches] == [3, 1]
    assert batches[0][1].shape == (3, CLASSES)


def test_custom_resize_and_crop(dataset_root: Path) -> None:
    data = load_list_dataset(dataset_root, "cifar-10", resize=64, crop=48)

    assert data.query.image_shape == (3, 48, 48)
    assert data.query.images(torch.tensor([0])).shape == (1, 3, 48, 48)
    assert data.split["preprocessing"] == {"name": "saat", "resize": 64, "crop": 48}


def banded_image(width: int, height: int, band: int) -> Image.Image:
    """Return an image that is red in its first ``band`` columns and blue elsewhere."""
    image = Image.new("RGB", (width, height), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, band, height))
    return image


def red_fraction(tensor: torch.Tensor) -> float:
    return float((tensor[0] > 0.5).float().mean())


def test_saat_keeps_aspect_ratio() -> None:
    # 1024x256 is already 256 on the short side, so the 224 center crop is
    # columns 400-623, all of them blue.
    image = banded_image(1024, 256, band=384)

    tensor = build_transform("saat")(image)

    assert tensor.shape == (3, 224, 224)
    assert red_fraction(tensor) == 0.0


def test_saat_resizes_short_side() -> None:
    # 2048x512 becomes 1024x256, so the red band shrinks to columns 0-383,
    # left of the center crop (columns 400-623).
    image = banded_image(2048, 512, band=768)

    tensor = build_transform("saat")(image)

    assert tensor.shape == (3, 224, 224)
    assert red_fraction(tensor) == 0.0


def test_dhta_squashes_to_square() -> None:
    # Squashing 1024x256 to 256x256 narrows the red band to 96 columns, so
    # columns 16-95 (80 of the 224 cropped) stay red.
    image = banded_image(1024, 256, band=384)

    tensor = build_transform("dhta")(image)

    assert tensor.shape == (3, 224, 224)
    assert red_fraction(tensor) == pytest.approx(80 / 224, abs=2 / 224)


def test_non_square_file_loads_square(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "wide")
    banded_image(1024, 256, band=384).save(root / "images/q0.png")

    saat = load_list_dataset(root, "cifar-10").query.images(torch.tensor([0]))[0]
    dhta = load_list_dataset(root, "cifar-10", preprocessing="dhta").query.images(
        torch.tensor([0])
    )[0]

    assert saat.shape == (3, 224, 224)
    assert red_fraction(saat) == 0.0
    assert red_fraction(dhta) > 0.3


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK"])
def test_image_modes_become_rgb(tmp_path: Path, mode: str) -> None:
    root = make_dataset(tmp_path / mode)
    Image.new("RGB", (50, 40), (10, 200, 30)).convert(mode).save(root / "images/q0.tiff")
    image_file = root / "test_img.txt"
    image_file.write_text(image_file.read_text().replace("q0.png", "q0.tiff"))

    batch = load_list_dataset(root, "cifar-10").query.images(torch.tensor([0]))

    assert batch.shape == (1, 3, 224, 224)


def test_jpeg_images_load(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "jpeg")
    Image.new("RGB", (300, 200), (0, 128, 255)).save(root / "images/q0.jpg", quality=95)
    image_file = root / "test_img.txt"
    image_file.write_text(image_file.read_text().replace("q0.png", "q0.jpg"))

    batch = load_list_dataset(root, "cifar-10").query.images(torch.tensor([0]))

    assert batch.shape == (1, 3, 224, 224)
    assert torch.allclose(batch[0].mean(dim=(1, 2)), torch.tensor([0, 128, 255]) / 255, atol=0.02)


def test_subset_keeps_rows(dataset_root: Path) -> None:
    database = load_list_dataset(dataset_root, "cifar-10").database

    subset = database.subset(torch.tensor([3, 1]))

    assert subset.paths == ["images/db3.png", "images/db1.png"]
    assert torch.equal(subset.labels, database.labels[[3, 1]])
    assert subset.image_shape == database.image_shape


# ----------------------------------------------------------------------------------------
# Settings


def test_unknown_dataset_name(dataset_root: Path) -> None:
    with pytest.raises(ConfigError, match="cifar-100"):
        load_list_dataset(dataset_root, "cifar-100")


def test_unknown_preprocessing(dataset_root: Path) -> None:
    with pytest.raises(ConfigError, match="'squash'"):
        load_list_dataset(dataset_root, "cifar-10", preprocessing="squash")


def test_crop_larger_than_resize() -> None:
    with pytest.raises(ConfigError, match="crop 300 is larger than resize 256"):
        build_transform("saat", resize=256, crop=300)


# ----------------------------------------------------------------------------------------
# Missing and empty files


def test_root_missing(tmp_path: Path) -> None:
    message = error_of(load_list_dataset, tmp_path / "absent", "cifar-10")

    assert "absent" in message
    assert "not found" in message


def test_root_is_a_file(tmp_path: Path) -> None:
    file = tmp_path / "file.txt"
    file.write_text("x")

    assert "is not a folder" in error_of(load_list_dataset, file, "cifar-10")


@pytest.mark.parametrize("stem", ["test", "train", "database"])
def test_image_list_missing(dataset_root: Path, stem: str) -> None:
    (dataset_root / f"{stem}_img.txt").unlink()

    message = error_of(load_list_dataset, dataset_root, "cifar-10")

    assert f"{stem}_img.txt not found" in message
    assert f"{stem}_label.txt" in message  # the folder listing
    assert "images/" in message


@pytest.mark.parametrize("stem", ["test", "train", "database"])
def test_label_file_missing(dataset_root: Path, stem: str) -> None:
    (dataset_root / f"{stem}_label.txt").unlink()

    message = error_of(load_list_dataset, dataset_root, "cifar-10")

    assert f"{stem}_label.txt not found" in message
    assert f"{stem}_img.txt has no labels" in message
    assert f"{stem}_img.txt" in message


@pytest.mark.parametrize("name", ["test_img.txt", "train_label.txt", "database_img.txt"])
@pytest.mark.parametrize("content", ["", "\n\n", "  \n"])
def test_empty_split_file(dataset_root: Path, name: str, content: str) -> None:
    (dataset_root / name).write_text(content)

    message = error_of(load_list_dataset, dataset_root, "cifar-10")

    assert name in message
    assert "is empty" in message


def test_blank_line_inside_list(dataset_root: Path) -> None:
    (dataset_root / "database_img.txt").write_text("images/db0.png\n\nimages/db1.png\n")

    message = error_of(load_list_dataset, dataset_root, "cifar-10")

    assert "database_img.txt: line 2 is blank" in message


def test_list_not_utf8(dataset_root: Path) -> None:
    (dataset_root / "test_img.txt").write_bytes(b"images/q\xff.png\n")

    message = error_of(load_list_dataset, dataset_root, "cifar-10")

    assert "test_img.txt is not valid UTF-8" in message


# ----------------------------------------------------------------------------------------
# Label rows


def test_label_row_wrong_width(dataset_root: Path) -> None:
    label_file = dataset_root / "database_label.txt"
    rows = label_file.read_text().splitlines()
    rows[2] = " ".join(["0"] * 9)
    label_file.write_text("\n".join(rows) + "\n")

    message = error_of(load_list_dataset, dataset_root, "cifar-10")

    assert "database_label.txt: line 3 has 9 label values, expected 10" in message


def test_label_width_follows_dataset(dataset_root: Path) -> None:
    # Ten columns are right for cifar-10 and wrong for nus-wide (21 classes).
    message = error_of(load_list_dataset, dataset_root, "nus-wide")

    assert "line 1 has 10 label values, expected 21" in message


@pytest.mark.parametrize("value", ["2", "0.5", "abc", "-1", "nan", "1e3"])
def test_label_value_not_binary(tmp_path: Path, value: str) -> None:
    file = tmp_path / "train_label.txt"
    file.write_text(f"0 1 0\n1 0 0\n0 0 {value}\n")

    message = error_of(read_label_file, file, 3)

    assert f"line 3, column 3: label value {value!r} is not 0 or 1" in message
    assert "train_label.txt" in message


def test_inline_label_value_not_binary(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "inline", inline_labels=True)
    bad_row = " ".join(["0"] * 9 + ["7"])
    good_row = " ".join(["0"] * 10)
    (root / "test_img.txt").write_text(f"images/q0.png {bad_row}\nimages/q1.png {good_row}\n")

    message = error_of(load_list_dataset, root, "cifar-10")

    assert "test_img.txt: line 1, column 10: label value '7' is not 0 or 1" in message


def test_list_and_labels_differ_in_length(dataset_root: Path) -> None:
    label_file = dataset_root / "train_label.txt"
    label_file.write_text(label_file.read_text() + " ".join(["0"] * CLASSES) + "\n")

    message = error_of(load_list_dataset, dataset_root, "cifar-10")

    assert "train_img.txt has 3 images" in message
    assert "train_label.txt has 4 label rows" in message


# ----------------------------------------------------------------------------------------
# Paths outside the data root


@pytest.mark.parametrize(
    "bad_path",
    ["/etc/passwd", "../outside.png", "images/../../outside.png", "..", "."],
)
def test_path_escaping_root(dataset_root: Path, bad_path: str) -> None:
    (dataset_root / "test_img.txt").write_text(f"images/q0.png\n{bad_path}\n")

    message = error_of(load_list_dataset, dataset_root, "cifar-10")

    expected = f"test_img.txt: line 2: image path {bad_path!r} resolves outside the data root"
    assert expected in message


def test_symlink_out_of_root(dataset_root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    write_image(outside / "secret.png", COLOURS[0])
    (dataset_root / "linked").symlink_to(outside, target_is_directory=True)
    (dataset_root / "escape.png").symlink_to(outside / "secret.png")

    for link in ("linked/secret.png", "escape.png"):
        (dataset_root / "test_img.txt").write_text(f"{link}\nimages/q1.png\n")

        message = error_of(load_list_dataset, dataset_root, "cifar-10")

        assert f"line 1: image path {link!r} resolves outside the data root" in message


def test_symlink_inside_root_allowed(dataset_root: Path) -> None:
    (dataset_root / "alias").symlink_to(dataset_root / "images", target_is_directory=True)
    (dataset_root / "test_img.txt").write_text("alias/q0.png\nimages/sub/../q1.png\n")
    (dataset_root / "images/sub").mkdir()

    data = load_list_dataset(dataset_root, "cifar-10")

    assert data.query.paths == ["alias/q0.png", "images/sub/../q1.png"]
    assert data.query.images(torch.tensor([0, 1])).shape == (2, 3, 224, 224)


def test_read_image_list_relative_root(dataset_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(dataset_root.parent)

    paths = read_image_list(Path(dataset_root.name) / "test_img.txt", dataset_root.name)

    assert paths == ["images/q0.png", "images/q1.png"]


def test_relative_root_survives_chdir(
    dataset_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(dataset_root.parent)
    data = load_list_dataset(dataset_root.name, "cifar-10")
    monkeypatch.chdir(tmp_path)

    assert data.split["root"] == str(dataset_root)
    assert data.query.images(torch.tensor([0])).shape == (1, 3, 224, 224)


# ----------------------------------------------------------------------------------------
# Missing and corrupt images


def write_truncated_jpeg(path: Path) -> None:
    buffer = io.BytesIO()
    noise = Image.frombytes("RGB", (128, 128), os.urandom(128 * 128 * 3))
    noise.save(buffer, "JPEG")
    data = buffer.getvalue()
    path.write_bytes(data[: len(data) * 3 // 4])


def test_missing_image_raises_on_load(dataset_root: Path) -> None:
    data = load_list_dataset(dataset_root, "cifar-10")
    (dataset_root / "images/db1.png").unlink()

    message = error_of(data.database.images, torch.tensor([0, 1]))

    assert "image 'images/db1.png' (line 2 of" in message
    assert "database_img.txt) not found" in message


def test_corrupt_image_raises_on_load(dataset_root: Path) -> None:
    (dataset_root / "images/q1.png").write_bytes(b"not an image at all")
    data = load_list_dataset(dataset_root, "cifar-10")

    message = error_of(data.query.images, torch.tensor([1]))

    assert "image 'images/q1.png' (line 2 of" in message
    assert "cannot be decoded" in message


def test_truncated_jpeg_raises_on_load(dataset_root: Path) -> None:
    write_truncated_jpeg(dataset_root / "images/cut.jpg")
    (dataset_root / "test_img.txt").write_text("images/q0.png\nimages/cut.jpg\n")
    data = load_list_dataset(dataset_root, "cifar-10")

    message = error_of(data.query.images, torch.tensor([0, 1]))

    assert "image 'images/cut.jpg'" in message
    assert "truncated" in message


def test_verify_images_passes_good_folder(dataset_root: Path) -> None:
    data = load_list_dataset(dataset_root, "cifar-10", verify=True)

    assert verify_images(data.train) == 2  # train lists db0 twice
    assert verify_images(data.database, decode=True) == 4


def test_verify_images_lists_every_failure(dataset_root: Path) -> None:
    data = load_list_dataset(dataset_root, "cifar-10")
    (dataset_root / "images/db0.png").unlink()
    (dataset_root / "images/db3.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")

    message = error_of(verify_images, data.database)

    assert "2 of 4 image files" in message
    assert "image 'images/db0.png' (line 1 of" in message
    assert "file not found" in message
    assert "image 'images/db3.png' (line 4 of" in message


def test_verify_decode_catches_truncated_jpeg(dataset_root: Path) -> None:
    write_truncated_jpeg(dataset_root / "images/cut.jpg")
    (dataset_root / "test_img.txt").write_text("images/q0.png\nimages/cut.jpg\n")
    data = load_list_dataset(dataset_root, "cifar-10")

    message = error_of(verify_images, data.query, decode=True)

    assert "1 of 2 image files" in message
    assert "image 'images/cut.jpg' (line 2 of" in message


def test_load_verify_reports_all_sets(dataset_root: Path) -> None:
    (dataset_root / "images/q0.png").unlink()
    (dataset_root / "images/db0.png").unlink()  # in train and database, reported once

    message = error_of(load_list_dataset, dataset_root, "cifar-10", verify=True)

    assert "2 of 6 image files" in message
    assert "images/q0.png" in message
    assert message.count("images/db0.png") == 1


def test_load_verify_on_lists_only(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "lists-only", images=False)

    message = error_of(load_list_dataset, root, "cifar-10", verify=True)

    assert "6 of 6 image files" in message


# ----------------------------------------------------------------------------------------
# Split statistics


def test_split_statistics_small(dataset_root: Path) -> None:
    statistics = split_statistics(load_list_dataset(dataset_root, "cifar-10"))

    assert statistics["sizes"] == {"query": 2, "train": 3, "database": 4}
    assert statistics["distinct_paths"] == {"query": 2, "train": 2, "database": 4}
    assert statistics["zero_label_rows"] == {"query": 1, "train": 0, "database": 1}
    assert statistics["distinct_database_labels"] == 3
    assert statistics["mean_labels_per_row"]["database"] == pytest.approx(5 / 4)
    assert statistics["mean_labels_per_row"]["train"] == pytest.approx(4 / 3)
    assert statistics["train_in_database"] is True
    assert statistics["query_database_disjoint"] is True


def test_split_statistics_detects_overlap(dataset_root: Path) -> None:
    (dataset_root / "test_img.txt").write_text("images/db2.png\nimages/q1.png\n")
    (dataset_root / "train_img.txt").write_text("images/db0.png\nimages/q0.png\nimages/db0.png\n")

    statistics = split_statistics(load_list_dataset(dataset_root, "cifar-10"))

    assert statistics["train_in_database"] is False
    assert statistics["query_database_disjoint"] is False


def test_split_statistics_without_paths(dataset_root: Path) -> None:
    data = load_list_dataset(dataset_root, "cifar-10")
    pixels = torch.zeros((2, 3, 8, 8), dtype=torch.uint8)
    data.query = TensorImageSet(pixels, data.query.labels)

    statistics = split_statistics(data)

    assert statistics["distinct_paths"] is None
    assert statistics["train_in_database"] is None
    assert statistics["sizes"]["database"] == 4


# ----------------------------------------------------------------------------------------
# Real FLICKR-25K lists: set HASHBENCH_FLICKR25K_LISTS to the folder that contains
# test_img.txt, test_label.txt, ... of the field's FLICKR-25K split (no images needed).

FLICKR_LISTS = os.environ.get("HASHBENCH_FLICKR25K_LISTS")
needs_flickr = pytest.mark.skipif(
    not FLICKR_LISTS,
    reason="HASHBENCH_FLICKR25K_LISTS is not set to a folder with the FLICKR-25K list files",
)


@pytest.fixture(scope="module")
def flickr_data():
    return load_list_dataset(FLICKR_LISTS, "flickr-25k", verify=False)


@needs_flickr
@pytest.mark.parametrize("stem,rows", [("test", 1700), ("train", 5000), ("database", 23300)])
def test_flickr_label_files(stem: str, rows: int) -> None:
    labels = read_label_file(Path(FLICKR_LISTS) / f"{stem}_label.txt", 38)

    assert labels.shape == (rows, 38)
    assert set(labels.unique().tolist()) == {0.0, 1.0}


@needs_flickr
@pytest.mark.parametrize(
    "stem,rows,distinct",
    [("test", 1700, 1700), ("train", 5000, 4496), ("database", 23300, 23300)],
)
def test_flickr_image_lists(stem: str, rows: int, distinct: int) -> None:
    paths = read_image_list(Path(FLICKR_LISTS) / f"{stem}_img.txt", FLICKR_LISTS)

    assert len(paths) == rows
    assert len(set(paths)) == distinct


@needs_flickr
def test_flickr_split_record(flickr_data) -> None:
    assert flickr_data.n_classes == 38
    assert flickr_data.split["sizes"] == {"query": 1700, "train": 5000, "database": 23300}
    assert flickr_data.split["zero_label_rows"] == {"query": 38, "train": 95, "database": 381}


@needs_flickr
def test_flickr_split_statistics(flickr_data) -> None:
    statistics = split_statistics(flickr_data)

    # Train is sampled from the database with replacement: 5,000 rows, 4,496 images.
    assert statistics["distinct_paths"] == {"query": 1700, "train": 4496, "database": 23300}
    assert statistics["zero_label_rows"] == {"query": 38, "train": 95, "database": 381}
    assert statistics["distinct_database_labels"] == 4271
    assert statistics["train_in_database"] is True
    assert statistics["query_database_disjoint"] is True
    assert 4.5 < statistics["mean_labels_per_row"]["database"] < 5.0


@needs_flickr
def test_flickr_train_labels_match_database(flickr_data) -> None:
    database_rows = dict(zip(flickr_data.database.paths, flickr_data.database.labels))

    for path, row in zip(flickr_data.train.paths, flickr_data.train.labels):
        assert torch.equal(database_rows[path], row), path
