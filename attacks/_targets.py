"""Target labels for targeted attacks, shared by every attack and model of a split.

SAAT rule: candidates are the distinct non-zero label vectors of the
database; a query's target shares no label with the query's own label and
is drawn uniformly with a seeded generator. ``min_count`` further requires
that many database items carrying exactly the target vector, so DHTA can
vote its anchors without replacement.
"""

from __future__ import annotations

import torch
from torch import Tensor


def target_candidates(database_labels: Tensor, *, min_count: int = 1) -> Tensor:
    """Return the distinct non-zero database label vectors with at least ``min_count`` exact matches."""
    distinct, counts = torch.unique(database_labels, dim=0, return_counts=True)
    keep = (distinct.sum(1) > 0) & (counts >= min_count)
    return distinct[keep]


def select_target_labels(
    query_labels: Tensor, database_labels: Tensor, *, seed: int = 0, min_count: int = 1
) -> tuple[Tensor, Tensor]:
    """Return ``(targets, valid)``: one target label per query and whether one exists.

    A query with no disjoint candidate gets an all-zero row and ``valid`` False;
    callers skip and count it.
    """
    candidates = target_candidates(database_labels, min_count=min_count).to(query_labels.dtype)
    generator = torch.Generator().manual_seed(seed)
    disjoint = (query_labels @ candidates.T) == 0
    targets = torch.zeros_like(query_labels)
    valid = disjoint.any(dim=1)
    for row in range(query_labels.shape[0]):
        options = torch.nonzero(disjoint[row]).flatten()
        if len(options):
            pick = options[torch.randint(0, len(options), (1,), generator=generator)]
            targets[row] = candidates[pick]
    return targets, valid
