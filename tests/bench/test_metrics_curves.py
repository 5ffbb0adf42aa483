"""Precision-recall and precision@N curves."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.metrics import precision_at_n_curve, precision_recall_curve
from models.errors import ConfigError
from tests.bench import reference_metrics as reference
from tests.bench.test_metrics_map import as_numpy, codes_at_distances, one_hot, random_case


def small_case():
    """Return a database at distances 0, 1, 2, 3 with classes [0, 1, 0, 1] and a class-0 query.

    Ranked relevance [1, 0, 1, 0]: hits at ranks 1 and 3, n_rel = 2.
    """
    query, database = codes_at_distances([0, 1, 2, 3], n_bits=4)
    return {
        "query_codes": query,
        "database_codes": database,
        "query_labels": one_hot([0], 2),
        "database_labels": one_hot([0, 1, 0, 1], 2),
    }


def test_pr_hand_worked():
    # r_num = floor(2 * r): 0, 1, 1, 2 for r = 0.25, 0.5, 0.75, 1.0.
    # Precision: 1.0 (r_num 0), 1/1, 1/1, 2/3 (2nd hit at rank 3).
    curve = precision_recall_curve(**small_case(), recall_levels=torch.tensor([0.25, 0.5, 0.75, 1.0]))
    assert curve.precision.dtype == torch.float64
    assert curve.precision.tolist() == pytest.approx([1.0, 1.0, 1.0, 2 / 3], abs=1e-15)
    assert curve.recall.tolist() == [0.25, 0.5, 0.75, 1.0]
    assert curve.n_queries_used == 1
    assert curve.n_queries_without_relevant == 0


def test_pr_single_relevant_item_ranked_first():
    # n_rel = 1 and the first ranked item is the relevant one. For r < 1,
    # r_num = 0 and the precision is defined as 1.0. At r = 1 it is 1/1.
    query, database = codes_at_distances([0, 1, 2], n_bits=4)
    curve = precision_recall_curve(
        query_codes=query,
        database_codes=database,
        query_labels=one_hot([0], 2),
        database_labels=one_hot([0, 1, 1], 2),
    )
    assert curve.recall.shape == (100,)
    assert curve.precision.tolist() == [1.0] * 100


def test_pr_recall_029_of_100_uses_29th_hit():
    # 100 * 0.29 is 28.999999999999996 in float64, so a plain floor gives 28.
    # All codes are equal, so the ranking is the index order. Items 28..37
    # are irrelevant: hit 28 sits at rank 28 and hit 29 at rank 39.
    # Expected precision 29 / 39. The floor-28 reading would give 28 / 28.
    assert int(np.floor(100 * 0.29)) == 28
    n_database = 110
    query_codes = torch.ones(1, 8)
    database_codes = torch.ones(n_database, 8)
    database_classes = [1 if 28 <= j < 38 else 0 for j in range(n_database)]
    curve = precision_recall_curve(
        query_codes=query_codes,
        database_codes=database_codes,
        query_labels=one_hot([0], 2),
        database_labels=one_hot(database_classes, 2),
        recall_levels=torch.tensor([0.29], dtype=torch.float64),
    )
    assert curve.precision.tolist() == pytest.approx([29 / 39], abs=1e-15)


def test_pr_queries_without_relevant_items_excluded():
    # Query 1 has class 1, which no database item has.
    inputs = small_case()
    inputs["query_codes"] = inputs["query_codes"].repeat(2, 1)
    inputs["query_labels"] = one_hot([0, 1], 2)
    inputs["database_labels"] = one_hot([0, 0, 0, 0], 2)
    inputs["database_labels"][[1, 3]] = 0
    # Query 0 keeps hits at ranks 1 and 3 (items 1 and 3 now have no label).
    curve = precision_recall_curve(**inputs, recall_levels=torch.tensor([0.5, 1.0]))
    assert curve.precision.tolist() == pytest.approx([1.0, 2 / 3], abs=1e-15)
    assert curve.n_queries_used == 1
    assert curve.n_queries_without_relevant == 1


def test_pr_no_query_with_relevant_items_gives_nan():
    inputs = small_case()
    inputs["query_labels"] = one_hot([1], 2)
    inputs["database_labels"] = one_hot([0, 0, 0, 0], 2)
    curve = precision_recall_curve(**inputs, recall_levels=torch.tensor([0.5]))
    assert curve.n_queries_used == 0
    assert curve.n_queries_without_relevant == 1
    assert torch.isnan(curve.precision).all()


@pytest.mark.parametrize(
    "n_bits, n_database, multi_label, chunk_size",
    [(4, 80, False, 1), (8, 200, True, 5), (16, 300, True, None), (32, 150, False, 7)],
)
def test_pr_matches_reference(n_bits, n_database, multi_label, chunk_size):
    codes_and_labels = random_case(n_bits * 7 + n_database, 20, n_database, n_bits, 4, multi_label)
    levels = torch.arange(1, 101, dtype=torch.float64) / 100
    expected, expected_used, expected_skipped = reference.precision_recall_curve(
        *as_numpy(*codes_and_labels), recall_levels=levels.tolist()
    )
    query_codes, database_codes, query_labels, database_labels = codes_and_labels
    curve = precision_recall_curve(
        query_codes=query_codes,
        database_codes=database_codes,
        query_labels=query_labels,
        database_labels=database_labels,
        chunk_size=chunk_size,
    )
    np.testing.assert_allclose(curve.precision.numpy(), expected, rtol=0, atol=1e-9)
    assert curve.n_queries_used == expected_used
    assert curve.n_queries_without_relevant == expected_skipped
    assert expected_skipped > 0, "the case should include queries without relevant items"


def test_pr_chunk_size_does_not_change_curve():
    query_codes, database_codes, query_labels, database_labels = random_case(3, 17, 200, 8, 4, True)
    arguments = dict(
        query_codes=query_codes,
        database_codes=database_codes,
        query_labels=query_labels,
        database_labels=database_labels,
    )
    whole = precision_recall_curve(**arguments, chunk_size=17)
    for chunk_size in (1, 4):
        assert torch.equal(precision_recall_curve(**arguments, chunk_size=chunk_size).precision, whole.precision)


def test_pr_invalid_recall_levels_rejected():
    with pytest.raises(ConfigError, match=r"recall_levels must lie in \[0, 1\], got \[0.5, 1.5\]"):
        precision_recall_curve(**small_case(), recall_levels=torch.tensor([0.5, 1.5]))


def test_precision_at_n_hand_worked():
    # Ranked relevance [1, 0, 1, 0]: P@1 = 1, P@2 = 1/2, P@3 = 2/3, P@4 = 2/4,
    # and N = 10 is clamped to the database size 4.
    curve = precision_at_n_curve(**small_case(), n_values=[1, 2, 3, 4, 10])
    assert curve.n.tolist() == [1, 2, 3, 4, 4]
    assert curve.precision.dtype == torch.float64
    assert curve.precision.tolist() == pytest.approx([1.0, 0.5, 2 / 3, 0.5, 0.5], abs=1e-15)
    assert curve.n_queries == 1


def test_precision_at_n_query_without_relevant_counts_zero():
    # Query 1 matches nothing and contributes 0: mean P@3 = (2/3 + 0) / 2.
    inputs = small_case()
    inputs["query_codes"] = inputs["query_codes"].repeat(2, 1)
    inputs["query_labels"] = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    curve = precision_at_n_curve(**inputs, n_values=[3])
    assert curve.precision.tolist() == pytest.approx([1 / 3], abs=1e-15)
    assert curve.n_queries == 2


def test_precision_at_n_default_grid():
    curve = precision_at_n_curve(**small_case())
    assert curve.n.shape == (91,)
    assert curve.n.tolist() == [4] * 91
    assert curve.precision.tolist() == pytest.approx([0.5] * 91, abs=1e-15)


@pytest.mark.parametrize("n_bits, multi_label", [(4, False), (8, True), (24, True)])
def test_precision_at_n_matches_reference(n_bits, multi_label):
    codes_and_labels = random_case(n_bits, 18, 250, n_bits, 5, multi_label)
    n_values = [1, 5, 17, 100, 249, 250, 400]
    expected = reference.precision_at_n(*as_numpy(*codes_and_labels), n_values=n_values)
    query_codes, database_codes, query_labels, database_labels = codes_and_labels
    for chunk_size in (1, 6, None):
        curve = precision_at_n_curve(
            query_codes=query_codes,
            database_codes=database_codes,
            query_labels=query_labels,
            database_labels=database_labels,
            n_values=n_values,
            chunk_size=chunk_size,
        )
        np.testing.assert_allclose(curve.precision.numpy(), expected, rtol=0, atol=1e-9)


@pytest.mark.parametrize("n_values, message", [([0, 5], r"positive, got \[0, 5\]"), ([1.5], "ints, got dtype")])
def test_precision_at_n_invalid_grid_rejected(n_values, message):
    with pytest.raises(ConfigError, match=f"n_values must be {message}"):
        precision_at_n_curve(**small_case(), n_values=n_values)
