"""A multi-label dataset built from real Fashion-MNIST items: 2x2 mosaics.

Each 56x56 mosaic shows four items drawn from one or two classes (half of
the mosaics each), and its label is the multi-hot union of those classes.
Relevance is "shares at least one label", as for NUS-WIDE and MS-COCO.
Query mosaics are built from the official test images and database mosaics
from the official training images, so no item appears on both sides.
"""

from __future__ import annotations

import torch

N_CLASSES = 10


def build_mosaics(
    images: torch.Tensor, class_ids: torch.Tensor, pool: torch.Tensor, count: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``count`` mosaics (uint8, count x 1 x 56 x 56) and their multi-hot labels."""
    members = [pool[class_ids[pool] == cls] for cls in range(N_CLASSES)]
    mosaics = torch.empty(count, 1, 56, 56, dtype=torch.uint8)
    labels = torch.zeros(count, N_CLASSES)
    for item in range(count):
        n_classes = 1 + int(torch.randint(0, 2, (1,), generator=generator))
        classes = torch.randperm(N_CLASSES, generator=generator)[:n_classes]
        # Every chosen class appears at least once; the other tiles repeat them at random.
        extra = classes[torch.randint(0, n_classes, (4 - n_classes,), generator=generator)]
        tiles = torch.cat([classes, extra])[torch.randperm(4, generator=generator)]
        for position, cls in enumerate(tiles.tolist()):
            source = members[cls][torch.randint(0, len(members[cls]), (1,), generator=generator)]
            row, column = divmod(position, 2)
            mosaics[item, :, row * 28 : (row + 1) * 28, column * 28 : (column + 1) * 28] = images[source][0]
        labels[item, classes] = 1.0
    return mosaics, labels
