"""Indexable image collections that models, attacks and defenses read from.

An ``ImageSet`` returns float32 images in [0, 1] for a tensor of indices and
keeps its labels in memory. The in-memory ``TensorImageSet`` stores uint8
pixels. The list-format datasets in ``bench.data`` load files on demand
behind the same interface.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from models.errors import DataError


@runtime_checkable
class ImageSet(Protocol):
    """Images addressed by index, with multi-hot float32 labels (items, classes)."""

    labels: Tensor

    def __len__(self) -> int: ...

    @property
    def image_shape(self) -> tuple[int, int, int]: ...

    def images(self, indices: Tensor) -> Tensor: ...


class TensorImageSet:
    """Images held in memory as a uint8 (items, channels, height, width) tensor."""

    def __init__(self, pixels: Tensor, labels: Tensor) -> None:
        if pixels.dtype != torch.uint8 or pixels.dim() != 4:
            raise DataError(
                f"pixels must be a uint8 (items, channels, height, width) tensor, "
                f"got {pixels.dtype} of shape {tuple(pixels.shape)}"
            )
        if labels.dim() != 2 or labels.shape[0] != pixels.shape[0]:
            raise DataError(
                f"labels of shape {tuple(labels.shape)} do not match "
                f"{pixels.shape[0]} images; expected ({pixels.shape[0]}, classes)"
            )
        self.pixels = pixels
        self.labels = labels.to(torch.float32)

    def __len__(self) -> int:
        return self.pixels.shape[0]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.pixels.shape[1:])  # type: ignore[return-value]

    def images(self, indices: Tensor) -> Tensor:
        return self.pixels[indices].to(torch.float32).div_(255.0)

    def subset(self, indices: Tensor) -> TensorImageSet:
        return TensorImageSet(self.pixels[indices], self.labels[indices])


def iterate_batches(
    image_set: ImageSet,
    batch_size: int,
    *,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
    """Yield ``(images, labels, indices)`` batches, all on ``device``.

    With ``shuffle`` the order comes from ``generator``, so a seeded generator
    gives the same batches on every run.
    """
    count = len(image_set)
    order = torch.randperm(count, generator=generator) if shuffle else torch.arange(count)
    for start in range(0, count, batch_size):
        indices = order[start : start + batch_size]
        images = image_set.images(indices).to(device, non_blocking=True)
        labels = image_set.labels[indices].to(device, non_blocking=True)
        yield images, labels, indices.to(device)
