"""Shared fixtures: tiny models, images and labels that keep every test fast on a 2-core CPU.

Sizes: 16 bits, 4 classes, 1 x 16 x 16 grey images. A test module may define
its own fixtures under other names; these are the defaults for new tests.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import pytest
import torch

from models import MODELS
from models.base import HashingModel
from models.imageset import TensorImageSet
from models.training import TrainConfig, train_model

N_BITS = 16
N_CLASSES = 4
IMAGE_SIZE = 16

ModelFactory = Callable[..., HashingModel]


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """Run the body on one torch thread and restore the previous thread count afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def single_thread() -> Iterator[None]:
    """Run each test body on one torch thread, so tests do not oversubscribe a small CPU.

    The count is restored after every test, because thread counts change
    float results and end-to-end tests compare in-process runs with
    subprocess runs. Session and module fixtures are set up before this
    fixture, so one that wants a single thread uses ``one_torch_thread``.
    """
    with one_torch_thread():
        yield


@pytest.fixture(scope="session")
def make_model() -> ModelFactory:
    """Return a factory ``make_model(name="dph", **overrides)`` for tiny models of 16 bits and 4 classes."""

    def make(name: str = "dph", **overrides: object) -> HashingModel:
        options = {"n_bits": N_BITS, "n_classes": N_CLASSES, "in_channels": 1, "image_size": IMAGE_SIZE}
        options.update(overrides)
        return MODELS.create(name, **options)

    return make


@pytest.fixture
def tiny_images() -> torch.Tensor:
    """Return 6 random grey 16 x 16 images in [0, 1]."""
    generator = torch.Generator().manual_seed(1)
    return torch.rand(6, 1, IMAGE_SIZE, IMAGE_SIZE, generator=generator)


@pytest.fixture
def one_hot_labels() -> torch.Tensor:
    """Return 6 single-label rows over 4 classes: classes 0, 1, 2, 3, 0, 1."""
    return torch.nn.functional.one_hot(torch.arange(6) % N_CLASSES, N_CLASSES).to(torch.float32)


@pytest.fixture
def multi_hot_labels() -> torch.Tensor:
    """Return 6 multi-label rows over 4 classes, one of them all zero."""
    return torch.tensor(
        [
            [1.0, 1.0, 0.0, 0.0],
            [0.0, 1.0, 0.0, 1.0],
            [1.0, 0.0, 1.0, 1.0],
            [0.0, 0.0, 1.0, 0.0],
            [0.0, 0.0, 0.0, 0.0],
            [1.0, 1.0, 1.0, 1.0],
        ]
    )


def separable_image_set(per_class: int = 8, seed: int = 0) -> TensorImageSet:
    """Return a single-label set where class c is a bright c-th quadrant on a dark, noisy background."""
    generator = torch.Generator().manual_seed(seed)
    classes = torch.arange(per_class * N_CLASSES) % N_CLASSES
    images = 0.2 * torch.rand(len(classes), 1, IMAGE_SIZE, IMAGE_SIZE, generator=generator)
    half = IMAGE_SIZE // 2
    for index, label in enumerate(classes.tolist()):
        row, column = divmod(label, 2)
        images[index, :, row * half : (row + 1) * half, column * half : (column + 1) * half] += 0.7
    pixels = (images.clamp(0, 1) * 255).round().to(torch.uint8)
    labels = torch.nn.functional.one_hot(classes, N_CLASSES).to(torch.float32)
    return TensorImageSet(pixels, labels)


@pytest.fixture(scope="session")
def toy_image_set() -> TensorImageSet:
    """Return 32 separable single-label 16 x 16 images (8 per class)."""
    return separable_image_set()


@pytest.fixture(scope="session")
def trained_victim(make_model: ModelFactory, toy_image_set: TensorImageSet) -> HashingModel:
    """Return a DPH model trained for 4 SGD steps on ``toy_image_set``, in eval mode.

    The model is shared by the whole session: copy it (``copy.deepcopy``)
    before changing its mode, flags or weights.
    """
    model = make_model("dph")
    with one_torch_thread():
        train_model(model, toy_image_set, TrainConfig(epochs=2, batch_size=16))
    return model.eval()
