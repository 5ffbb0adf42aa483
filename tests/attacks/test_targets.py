"""Tests of target-label selection for targeted attacks (the SAAT rule)."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from attacks._targets import select_target_labels, target_candidates

# Six distinct database label vectors with exact-match counts 3, 1, 2, 1, 1 and 2 (the all-zero row).
DATABASE = torch.tensor(
    [
        [1.0, 0.0, 0.0, 0.0],
        [1.0, 0.0, 0.0, 0.0],
        [1.0, 0.0, 0.0, 0.0],
        [0.0, 1.0, 0.0, 0.0],
        [0.0, 0.0, 1.0, 0.0],
        [0.0, 0.0, 1.0, 0.0],
        [0.0, 1.0, 1.0, 0.0],
        [0.0, 0.0, 0.0, 1.0],
        [0.0, 0.0, 0.0, 0.0],
        [0.0, 0.0, 0.0, 0.0],
    ]
)


def exact_counts(labels: torch.Tensor) -> Counter:
    return Counter(tuple(row) for row in labels.tolist())


def test_candidates_distinct_nonzero() -> None:
    candidates = target_candidates(DATABASE)

    rows = [tuple(row) for row in candidates.tolist()]
    expected = {key for key in exact_counts(DATABASE) if any(key)}
    assert len(rows) == len(set(rows))
    assert set(rows) == expected


@pytest.mark.parametrize("min_count", [1, 2, 3, 4])
def test_candidates_min_count(min_count: int) -> None:
    candidates = target_candidates(DATABASE, min_count=min_count)

    counts = exact_counts(DATABASE)
    expected = {key for key, count in counts.items() if any(key) and count >= min_count}
    assert {tuple(row) for row in candidates.tolist()} == expected


def test_targets_disjoint_and_from_database() -> None:
    queries = torch.tensor([[1.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 1], [1, 1, 0, 0], [0, 0, 0, 0]]).repeat(4, 1)
    allowed = {key for key in exact_counts(DATABASE) if any(key)}

    targets, valid = select_target_labels(queries, DATABASE, seed=0)

    assert valid.all()
    for query, target in zip(queries.tolist(), targets.tolist()):
        assert tuple(target) in allowed
        assert sum(target) > 0
        assert sum(q * t for q, t in zip(query, target)) == 0, (query, target)


def test_targets_respect_min_count() -> None:
    queries = torch.tensor([[0.0, 0, 0, 1], [0, 1, 0, 0], [0, 0, 1, 0]]).repeat(5, 1)
    counts = exact_counts(DATABASE)

    targets, valid = select_target_labels(queries, DATABASE, seed=1, min_count=2)

    assert valid.all()
    for target in targets.tolist():
        assert counts[tuple(target)] >= 2, target


def test_targets_seeded() -> None:
    queries = torch.tensor([[0.0, 0, 0, 1]]).repeat(30, 1)

    first, _ = select_target_labels(queries, DATABASE, seed=4)
    again, _ = select_target_labels(queries, DATABASE, seed=4)
    other, _ = select_target_labels(queries, DATABASE, seed=5)

    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_targets_uniform() -> None:
    # Query class 3 leaves the four candidates (1,0,0,0), (0,1,0,0), (0,0,1,0) and (0,1,1,0).
    queries = torch.tensor([[0.0, 0, 0, 1]]).repeat(800, 1)

    targets, _ = select_target_labels(queries, DATABASE, seed=0)

    counts = exact_counts(targets)
    assert len(counts) == 4
    for key, count in counts.items():
        # Expected 200 each, with binomial standard deviation sqrt(800 * 0.25 * 0.75) = 12.2.
        assert 150 <= count <= 250, (key, count)


def test_query_without_candidate_invalid() -> None:
    # Row 0 carries every class, so no candidate is disjoint from it. Under min_count=3 row 1
    # (class 0) has no candidate either, because only (1, 0, 0, 0) occurs 3 times.
    queries = torch.tensor([[1.0, 1, 1, 1], [1, 0, 0, 0], [0, 1, 0, 0]])

    targets, valid = select_target_labels(queries, DATABASE, seed=0, min_count=3)

    assert valid.tolist() == [False, False, True]
    assert torch.equal(targets[0], torch.zeros(4))
    assert torch.equal(targets[1], torch.zeros(4))
    assert targets[2].tolist() == [1.0, 0.0, 0.0, 0.0]


def test_targets_shape_and_dtype() -> None:
    queries = torch.tensor([[1.0, 0, 0, 0], [0, 0, 0, 1]], dtype=torch.float64)

    targets, valid = select_target_labels(queries, DATABASE)

    assert targets.shape == queries.shape
    assert targets.dtype == torch.float64
    assert valid.dtype == torch.bool
