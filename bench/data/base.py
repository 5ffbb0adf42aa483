"""The retrieval split that every later step reads: query, train and database sets."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from models.imageset import ImageSet


@dataclass
class RetrievalData:
    """Query (test), training and database sets of one dataset split.

    ``split`` records the protocol: dataset name, sizes, seed and the split
    hash that identifies the exact items, so results can name what they used.
    """

    name: str
    n_classes: int
    query: ImageSet
    train: ImageSet
    database: ImageSet
    split: dict[str, Any] = field(default_factory=dict)

    @property
    def split_hash(self) -> str:
        return str(self.split["hash"])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.query.image_shape
