"""MAP@k, per-query AP and the Hamming ranking behind them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import bench.metrics.ranking as ranking_module
from bench.metrics import average_precisions, mean_average_precision, rank_database
from models.errors import ConfigError, DataError
from tests.bench import reference_metrics as reference


def codes_at_distances(distances: list[int], n_bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Return one all-(+1) query code and database codes at the given Hamming distances.

    Database row j has its first distances[j] bits set to -1.
    """
    query = torch.ones(1, n_bits)
    database = torch.ones(len(distances), n_bits)
    for j, distance in enumerate(distances):
        database[j, :distance] = -1
    return query, database


def one_hot(class_ids: list[int], n_classes: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(class_ids), n_classes).to(torch.float32)


def random_case(seed: int, n_queries: int, n_database: int, n_bits: int, n_classes: int, multi_label: bool):
    """Return random codes and labels, with about 10% of the label rows all zero."""
    generator = torch.Generator().manual_seed(seed)
    query_codes = torch.randint(0, 2, (n_queries, n_bits), generator=generator).float() * 2 - 1
    database_codes = torch.randint(0, 2, (n_database, n_bits), generator=generator).float() * 2 - 1
    if multi_label:
        query_labels = (torch.rand(n_queries, n_classes, generator=generator) < 0.2).float()
        database_labels = (torch.rand(n_database, n_classes, generator=generator) < 0.2).float()
    else:
        query_labels = one_hot(torch.randint(0, n_classes, (n_queries,), generator=generator).tolist(), n_classes)
        database_labels = one_hot(torch.randint(0, n_classes, (n_database,), generator=generator).tolist(), n_classes)
    query_labels[torch.rand(n_queries, generator=generator) < 0.1] = 0
    database_labels[torch.rand(n_database, generator=generator) < 0.1] = 0
    return query_codes, database_codes, query_labels, database_labels


def as_numpy(*tensors):
    return [t.numpy() for t in tensors]


# Hand-worked case shared by several tests. Distances [2, 0, 1, 1, 3] rank
# the database as [1, 2, 3, 0, 4]: item 1 at d=0, then the d=1 tie 2 before 3,
# then 0 at d=2 and 4 at d=3. The query has class 0 and the database classes
# are [0, 1, 0, 1, 0], so the ranked relevance is [0, 1, 0, 1, 1].
HAND_DISTANCES = [2, 0, 1, 1, 3]
HAND_DATABASE_CLASSES = [0, 1, 0, 1, 0]


def hand_inputs(query_class: int = 0):
    query, database = codes_at_distances(HAND_DISTANCES, n_bits=4)
    return {
        "query_codes": query,
        "database_codes": database,
        "query_labels": one_hot([query_class], 3),
        "database_labels": one_hot(HAND_DATABASE_CLASSES, 3),
    }


def test_ap_hand_worked_whole_database():
    # Hits at ranks 2, 4, 5: AP = (1/2 + 2/4 + 3/5) / 3 = 1.6 / 3.
    result = average_precisions(**hand_inputs(), topk=None)
    assert result.average_precision.dtype == torch.float64
    assert result.average_precision.tolist() == pytest.approx([1.6 / 3], abs=1e-15)
    assert result.relevant_in_topk.tolist() == [3]


def test_ap_hand_worked_top3():
    # Top 3 is [1, 2, 3] with relevance [0, 1, 0]: one hit at rank 2, AP = (1/2) / 1.
    result = average_precisions(**hand_inputs(), topk=3)
    assert result.average_precision.tolist() == pytest.approx([0.5], abs=1e-15)
    assert result.relevant_in_topk.tolist() == [1]


def test_ties_broken_by_index():
    # Breaking the d=1 tie the other way (3 before 2) would give ranked
    # relevance [0, 0, 1, 1, 1] and AP (1/3 + 2/4 + 3/5) / 3 = 0.4778.
    ranking = rank_database(query_codes=hand_inputs()["query_codes"], database_codes=hand_inputs()["database_codes"])
    assert ranking.tolist() == [[1, 2, 3, 0, 4]]
    value = mean_average_precision(**hand_inputs())
    assert value == pytest.approx(1.6 / 3, abs=1e-15)
    assert value != pytest.approx(1.4333333333333333 / 3, abs=1e-6)


def test_topk_larger_than_database_is_clamped():
    clamped = mean_average_precision(**hand_inputs(), topk=100)
    whole = mean_average_precision(**hand_inputs(), topk=None)
    assert clamped == whole == pytest.approx(1.6 / 3, abs=1e-15)


def test_zero_hit_query_counts_or_drops():
    # Query 0 is the hand case with top 3 (AP 0.5). Query 1 has class 2,
    # which no database item has, so its AP is 0 with 0 hits.
    inputs = hand_inputs()
    inputs["query_codes"] = inputs["query_codes"].repeat(2, 1)
    inputs["query_labels"] = one_hot([0, 2], 3)

    result = average_precisions(**inputs, topk=3)
    assert result.average_precision.tolist() == pytest.approx([0.5, 0.0], abs=1e-15)
    assert result.relevant_in_topk.tolist() == [1, 0]

    # "count": (0.5 + 0) / 2. "drop": only query 0 is left, 0.5 / 1.
    assert mean_average_precision(**inputs, topk=3, zero_hit="count") == pytest.approx(0.25, abs=1e-15)
    assert mean_average_precision(**inputs, topk=3, zero_hit="drop") == pytest.approx(0.5, abs=1e-15)


def test_drop_with_every_query_dropped_returns_zero():
    value = mean_average_precision(**hand_inputs(query_class=2), topk=3, zero_hit="drop")
    assert value == 0.0
    assert isinstance(value, float)


def test_multi_label_relevance_and_zero_rows():
    # Query classes {0, 1}. Database at distances 0, 1, 2, 3 has classes
    # {2}, {1}, {0, 2}, {} (all zero): relevance [0, 1, 1, 0].
    # AP = (1/2 + 2/3) / 2 = 7/12.
    query, database = codes_at_distances([0, 1, 2, 3], n_bits=4)
    query_labels = torch.tensor([[1.0, 1.0, 0.0]])
    database_labels = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    result = average_precisions(
        query_codes=query, database_codes=database, query_labels=query_labels, database_labels=database_labels
    )
    assert result.average_precision.tolist() == pytest.approx([7 / 12], abs=1e-15)
    assert result.relevant_in_topk.tolist() == [2]


def test_all_zero_query_labels_match_nothing():
    inputs = hand_inputs()
    inputs["query_labels"] = torch.zeros(1, 3)
    result = average_precisions(**inputs)
    assert result.average_precision.tolist() == [0.0]
    assert result.relevant_in_topk.tolist() == [0]


def test_many_classes_use_several_label_words():
    # Classes 5 and 130 sit in the first and third 63-class word.
    query, database = codes_at_distances([0, 1, 2], n_bits=4)
    query_labels = torch.zeros(1, 140)
    query_labels[0, 130] = 1
    database_labels = torch.zeros(3, 140)
    database_labels[0, 5] = 1
    database_labels[1, 130] = 1
    database_labels[2, [5, 130]] = 1
    # Relevance [0, 1, 1]: AP = (1/2 + 2/3) / 2 = 7/12.
    result = average_precisions(
        query_codes=query, database_codes=database, query_labels=query_labels, database_labels=database_labels
    )
    assert result.average_precision.tolist() == pytest.approx([7 / 12], abs=1e-15)


@pytest.mark.parametrize(
    "n_bits, n_database, n_classes, multi_label, topk",
    [
        (4, 60, 3, False, 10),  # 5 distances only: long ties
        (8, 300, 5, True, 50),
        (8, 300, 5, True, None),
        (16, 400, 10, False, 399),
        (32, 250, 4, True, 1),
        (64, 200, 6, False, 1000),  # topk above the database size
    ],
)
def test_ap_matches_reference(n_bits, n_database, n_classes, multi_label, topk):
    codes_and_labels = random_case(n_bits + n_database, 23, n_database, n_bits, n_classes, multi_label)
    query_codes, database_codes, query_labels, database_labels = codes_and_labels
    expected_ap, expected_hits = reference.average_precisions(*as_numpy(*codes_and_labels), topk=topk)

    result = average_precisions(
        query_codes=query_codes,
        database_codes=database_codes,
        query_labels=query_labels,
        database_labels=database_labels,
        topk=topk,
    )
    np.testing.assert_allclose(result.average_precision.numpy(), expected_ap, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(result.relevant_in_topk.numpy(), expected_hits)
    assert (expected_hits == 0).any(), "the case should include queries without a hit"

    for zero_hit in ("count", "drop"):
        expected_map = reference.mean_average_precision(
            *as_numpy(*codes_and_labels), topk=topk, zero_hit=zero_hit
        )
        value = mean_average_precision(
            query_codes=query_codes,
            database_codes=database_codes,
            query_labels=query_labels,
            database_labels=database_labels,
            topk=topk,
            zero_hit=zero_hit,
        )
        assert value == pytest.approx(expected_map, abs=1e-9)


@pytest.mark.parametrize("chunk_size", [1, 3, 7, 64])
def test_chunk_size_does_not_change_ap(chunk_size):
    query_codes, database_codes, query_labels, database_labels = random_case(5, 20, 300, 8, 4, True)
    arguments = dict(
        query_codes=query_codes,
        database_codes=database_codes,
        query_labels=query_labels,
        database_labels=database_labels,
        topk=40,
    )
    unchunked = average_precisions(**arguments, chunk_size=20)
    chunked = average_precisions(**arguments, chunk_size=chunk_size)
    assert torch.equal(chunked.average_precision, unchunked.average_precision)
    assert torch.equal(chunked.relevant_in_topk, unchunked.relevant_in_topk)


@pytest.mark.parametrize("n_bits, topk", [(4, 7), (8, 30), (12, 1), (16, 250), (16, 600)])
def test_ranking_matches_stable_argsort(n_bits, topk):
    query_codes, database_codes, _, _ = random_case(n_bits, 15, 600, n_bits, 2, False)
    ranking = rank_database(query_codes=query_codes, database_codes=database_codes, topk=topk, chunk_size=4)
    for i in range(len(query_codes)):
        expected = reference.ranking_row(query_codes[i].numpy(), database_codes.numpy())[:topk]
        np.testing.assert_array_equal(ranking[i].numpy(), expected)


def test_ranking_exact_when_cutoff_estimate_is_wrong(monkeypatch):
    # Sampling 3 columns out of 600 misjudges the cut-off distance for many
    # rows; those rows must take the exact path and still rank correctly.
    monkeypatch.setattr(ranking_module, "_SAMPLED_COLUMNS", 3)
    exact_calls = []
    original = ranking_module._exact_cutoffs

    def counting_exact_cutoffs(*args):
        exact_calls.append(1)
        return original(*args)

    monkeypatch.setattr(ranking_module, "_exact_cutoffs", counting_exact_cutoffs)
    for n_bits, topk in [(8, 30), (16, 100), (6, 400)]:
        query_codes, database_codes, _, _ = random_case(n_bits, 12, 600, n_bits, 2, False)
        ranking = rank_database(query_codes=query_codes, database_codes=database_codes, topk=topk)
        for i in range(len(query_codes)):
            expected = reference.ranking_row(query_codes[i].numpy(), database_codes.numpy())[:topk]
            np.testing.assert_array_equal(ranking[i].numpy(), expected)
    assert exact_calls, "the test should exercise the exact fallback"


@pytest.mark.parametrize("n_bits, topk", [(4, 1), (8, 37), (16, 299), (16, 300)])
def test_cutoff_estimate_exact_on_full_sample(n_bits, topk):
    # Below 4096 items the sample is the whole database, so the estimate
    # must equal the exact cut-off distance d*.
    query_codes, database_codes, _, _ = random_case(n_bits, 9, 300, n_bits, 2, False)
    ranker = ranking_module.HammingRanker(database_codes)
    assert ranker.stride == 1
    estimate = ranker._estimate_cutoffs(query_codes, topk)
    exact = ranking_module._exact_cutoffs(query_codes @ database_codes.T, n_bits, topk)
    assert estimate.tolist() == exact.tolist()


@pytest.mark.parametrize("key_limit", [1, 3000, 9000])
def test_ranking_exact_with_int64_keys_and_row_groups(monkeypatch, key_limit):
    # With 8 bits and 300 items a row spans 17 * 300 = 5100 key values. A
    # limit of 1 forces int64 keys one row at a time, 3000 forces int64 keys
    # (no row fits), and 9000 forces int32 keys one row per sort.
    monkeypatch.setattr(ranking_module, "_INT32_KEY_LIMIT", key_limit)
    query_codes, database_codes, _, _ = random_case(9, 10, 300, 8, 2, False)
    ranking = rank_database(query_codes=query_codes, database_codes=database_codes, topk=45)
    for i in range(len(query_codes)):
        expected = reference.ranking_row(query_codes[i].numpy(), database_codes.numpy())[:45]
        np.testing.assert_array_equal(ranking[i].numpy(), expected)


def test_integer_codes_and_bool_labels_accepted():
    inputs = hand_inputs()
    inputs["query_codes"] = inputs["query_codes"].to(torch.int8)
    inputs["database_codes"] = inputs["database_codes"].to(torch.int64)
    inputs["query_labels"] = inputs["query_labels"].bool()
    assert mean_average_precision(**inputs) == pytest.approx(1.6 / 3, abs=1e-15)


@pytest.mark.parametrize("bad_value", [0.0, 0.5])
def test_codes_outside_plus_minus_one_rejected(bad_value):
    inputs = hand_inputs()
    inputs["database_codes"][2, 1] = bad_value
    with pytest.raises(DataError, match=rf"database_codes contain values other than -1 and \+1.*{bad_value}"):
        mean_average_precision(**inputs)


def test_mismatched_bits_rejected():
    inputs = hand_inputs()
    inputs["database_codes"] = torch.ones(5, 8)
    with pytest.raises(DataError, match="database_codes have 8 bits but 4 were expected"):
        mean_average_precision(**inputs)


def test_label_width_mismatch_rejected():
    inputs = hand_inputs()
    inputs["query_labels"] = torch.tensor([[1.0, 0.0]])
    with pytest.raises(DataError, match="query_labels have 2 classes but database_labels have 3"):
        mean_average_precision(**inputs)


def test_label_row_count_mismatch_rejected():
    inputs = hand_inputs()
    inputs["database_labels"] = one_hot([0, 1, 0], 3)
    with pytest.raises(DataError, match=r"database_labels has 3 rows but database_codes has 5.*\(5, classes\)"):
        mean_average_precision(**inputs)


def test_non_binary_labels_rejected():
    inputs = hand_inputs()
    inputs["database_labels"][0, 0] = 0.5
    with pytest.raises(DataError, match=r"database_labels contain values other than 0 and 1.*0\.5"):
        mean_average_precision(**inputs)


def test_one_dimensional_labels_rejected():
    inputs = hand_inputs()
    inputs["query_labels"] = torch.tensor([0])
    with pytest.raises(DataError, match=r"query_labels must be a 2-D.*shape \(1,\)"):
        mean_average_precision(**inputs)


@pytest.mark.parametrize("topk", [-1, 0, 2.5, True])
def test_invalid_topk_rejected(topk):
    with pytest.raises(ConfigError, match=f"topk must be a positive int or None.*got {topk!r}"):
        mean_average_precision(**hand_inputs(), topk=topk)


def test_invalid_zero_hit_rejected():
    with pytest.raises(ConfigError, match="zero_hit must be 'count' or 'drop', got 'skip'"):
        mean_average_precision(**hand_inputs(), zero_hit="skip")


def test_invalid_chunk_size_rejected():
    with pytest.raises(ConfigError, match="chunk_size must be a positive int or None, got 0"):
        mean_average_precision(**hand_inputs(), chunk_size=0)


def test_positional_arguments_rejected():
    inputs = hand_inputs()
    with pytest.raises(TypeError):
        mean_average_precision(inputs["query_codes"], inputs["database_codes"])  # type: ignore[misc]
