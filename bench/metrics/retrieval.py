"""Retrieval metrics of hash codes: MAP@k, precision-recall curve, precision@N curve.

Conventions (those of the DeepHash and SAAT evaluation code):

* Codes are -1/+1 tensors of shape (items, bits), ranked by ascending Hamming
  distance with ties broken by ascending database index (``bench.metrics.ranking``).
* Labels are multi-hot 0/1 tensors of shape (items, classes). Database item j
  is relevant to query i when the two share at least one label, that is
  <label_i, label_j> > 0. An all-zero label row is relevant to nothing.

All functions take keyword-only arguments, so query and database cannot be
swapped by position, and process the queries in chunks of ``chunk_size`` so
that memory stays bounded.

NOTE: on a CPU whose cores other processes keep busy, call
``torch.set_num_threads(1)`` first. With 2 threads the many short parallel
steps stall, and MAP@5000 of 2,000 x 100,000 codes took 14-21 s instead of
1.7-1.9 s with 1 thread (benchmarks/README.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
from torch import Tensor

from bench.metrics.ranking import HammingRanker, check_code_pair, resolve_chunk_size, resolve_topk
from models.errors import ConfigError, DataError

# Class bits packed into each int64 word of a packed label row. 63 keeps the
# sign bit unused, so every power of two fits.
_BITS_PER_WORD = 63

ZeroHitPolicy = Literal["count", "drop"]


class AveragePrecisions(NamedTuple):
    """Per-query results of ``average_precisions``."""

    average_precision: Tensor
    """float64 (queries,) AP@k, 0.0 for a query with no relevant item in its top k."""
    relevant_in_topk: Tensor
    """int64 (queries,) number of relevant items among the query's top k."""


@dataclass(frozen=True)
class PrecisionRecallCurve:
    """Mean precision at fixed recall levels over the queries that have a relevant item."""

    recall: Tensor
    """float64 (levels,) recall levels."""
    precision: Tensor
    """float64 (levels,) mean precision at each level, NaN if no query has a relevant item."""
    n_queries_used: int
    """Queries with at least one relevant database item, over which the mean runs."""
    n_queries_without_relevant: int
    """Queries left out because no database item is relevant to them."""


@dataclass(frozen=True)
class PrecisionAtNCurve:
    """Mean precision within the top N ranked items, for each N of a grid."""

    n: Tensor
    """int64 (points,) list lengths, clamped to the database size."""
    precision: Tensor
    """float64 (points,) mean over all queries of (relevant in top N) / N."""
    n_queries: int
    """Queries averaged, including those without relevant items, which contribute 0."""


def default_recall_levels() -> Tensor:
    """Return the recall levels 0.01, 0.02, ..., 1.00 as float64."""
    return torch.arange(1, 101, dtype=torch.float64) / 100


def default_precision_at_n_grid() -> Tensor:
    """Return the list lengths 100, 110, ..., 1000 as int64."""
    return torch.arange(100, 1001, 10, dtype=torch.int64)


def average_precisions(
    *,
    query_codes: Tensor,
    database_codes: Tensor,
    query_labels: Tensor,
    database_labels: Tensor,
    topk: int | None = None,
    chunk_size: int | None = None,
) -> AveragePrecisions:
    """Compute AP@k of every query.

    For query i, R_k is the number of relevant items among its first k ranked
    items. AP = (1 / R_k) * sum over m = 1..R_k of m / pos_m, where pos_m is
    the 1-based rank of the m-th relevant item. AP is 0.0 when R_k = 0.
    ``topk=None`` ranks the whole database, and a ``topk`` larger than the
    database is clamped to its size.

    Returns both tensors on the CPU.
    """
    query_bits, database_bits = _check_inputs(query_codes, database_codes, query_labels, database_labels)
    n_database = database_codes.shape[0]
    k = resolve_topk(topk, n_database)
    step = resolve_chunk_size(chunk_size, n_database, device=query_codes.device)

    ranker = HammingRanker(database_codes)
    ap_parts = []
    hit_parts = []
    for start in range(0, query_codes.shape[0], step):
        stop = start + step
        ranking = ranker.rank(query_codes[start:stop], k)
        relevant = _relevance(query_bits[:, start:stop], database_bits, ranking)
        ap, hits = _average_precision_of_rows(relevant)
        ap_parts.append(ap.cpu())
        hit_parts.append(hits.cpu())
    return AveragePrecisions(torch.cat(ap_parts), torch.cat(hit_parts))


def mean_average_precision(
    *,
    query_codes: Tensor,
    database_codes: Tensor,
    query_labels: Tensor,
    database_labels: Tensor,
    topk: int | None = None,
    zero_hit: ZeroHitPolicy = "count",
    chunk_size: int | None = None,
) -> float:
    """Compute MAP@k, the mean of ``average_precisions`` over the queries.

    ``zero_hit`` sets how queries with no relevant item in their top k enter
    the mean. ``"count"`` averages their AP of 0 with the rest (DeepHash and
    SAAT). ``"drop"`` leaves them out (DHTA) and returns 0.0 if no query is left.

    t-MAP, the targeted-attack metric, is this function called with the
    target labels as ``query_labels``.
    """
    if zero_hit not in ("count", "drop"):
        raise ConfigError(f"zero_hit must be 'count' or 'drop', got {zero_hit!r}")
    ap, hits = average_precisions(
        query_codes=query_codes,
        database_codes=database_codes,
        query_labels=query_labels,
        database_labels=database_labels,
        topk=topk,
        chunk_size=chunk_size,
    )
    if zero_hit == "drop":
        ap = ap[hits > 0]
        if ap.numel() == 0:
            return 0.0
    return float(ap.mean())


def precision_recall_curve(
    *,
    query_codes: Tensor,
    database_codes: Tensor,
    query_labels: Tensor,
    database_labels: Tensor,
    recall_levels: Tensor | None = None,
    chunk_size: int | None = None,
) -> PrecisionRecallCurve:
    """Compute the mean precision at each recall level over the full ranking.

    Per query, n_rel is the number of relevant items in the whole database.
    At recall level r, r_num = floor(n_rel * r + 1e-9) and the precision is
    r_num divided by the 1-based rank of the r_num-th relevant item, or 1.0
    when r_num = 0. The 1e-9 absorbs float error, so that 0.29 * 100 gives 29
    rather than 28. Queries with n_rel = 0 are left out at every level and
    counted in ``n_queries_without_relevant``.

    ``recall_levels`` defaults to 0.01, 0.02, ..., 1.00 and must lie in [0, 1].
    """
    levels = _check_recall_levels(recall_levels)
    query_bits, database_bits = _check_inputs(query_codes, database_codes, query_labels, database_labels)
    n_database = database_codes.shape[0]
    step = resolve_chunk_size(chunk_size, n_database, device=query_codes.device)

    ranker = HammingRanker(database_codes)
    device_levels = levels.to(query_codes.device)
    precision_parts = []
    used_parts = []
    for start in range(0, query_codes.shape[0], step):
        stop = start + step
        ranking = ranker.rank(query_codes[start:stop], n_database)
        relevant = _relevance(query_bits[:, start:stop], database_bits, ranking)
        precision, used = _precision_at_recall_levels(relevant, device_levels)
        precision_parts.append(precision.cpu())
        used_parts.append(used.cpu())

    # One reduction over all queries, so the chunk size cannot change the sum.
    precision = torch.cat(precision_parts)
    used = torch.cat(used_parts)
    n_used = int(used.sum())
    if n_used > 0:
        mean = precision[used].mean(dim=0)
    else:
        mean = torch.full_like(levels, float("nan"))
    return PrecisionRecallCurve(levels, mean, n_used, query_codes.shape[0] - n_used)


def precision_at_n_curve(
    *,
    query_codes: Tensor,
    database_codes: Tensor,
    query_labels: Tensor,
    database_labels: Tensor,
    n_values: Tensor | list[int] | None = None,
    chunk_size: int | None = None,
) -> PrecisionAtNCurve:
    """Compute the mean precision within the top N ranked items for each N.

    ``n_values`` defaults to 100, 110, ..., 1000. Each N must be a positive
    int and is clamped to the database size. Every query counts, and one
    without relevant items contributes 0.
    """
    query_bits, database_bits = _check_inputs(query_codes, database_codes, query_labels, database_labels)
    n_database = database_codes.shape[0]
    grid = _check_n_values(n_values).clamp(max=n_database)
    step = resolve_chunk_size(chunk_size, n_database, device=query_codes.device)

    ranker = HammingRanker(database_codes)
    k = int(grid.max())
    columns = (grid - 1).to(query_codes.device)
    hit_parts = []
    for start in range(0, query_codes.shape[0], step):
        stop = start + step
        ranking = ranker.rank(query_codes[start:stop], k)
        relevant = _relevance(query_bits[:, start:stop], database_bits, ranking)
        hit_parts.append(relevant.cumsum(dim=1)[:, columns].cpu())

    hits = torch.cat(hit_parts).to(torch.float64)
    precision = (hits / grid.to(torch.float64)).mean(dim=0)
    return PrecisionAtNCurve(grid, precision, query_codes.shape[0])


def _average_precision_of_rows(relevant: Tensor) -> tuple[Tensor, Tensor]:
    """Return float64 AP and int64 hit counts of a (rows, k) ranked relevance matrix.

    Works on the hits only. ``nonzero`` lists them in (row, rank) order, so the
    m-th hit of a row is its m-th relevant item, with precision m / rank.
    """
    hits = relevant.sum(dim=1)
    hit_rows, hit_ranks = torch.nonzero(relevant, as_tuple=True)
    first_hit = torch.cumsum(hits, dim=0) - hits
    hit_index = torch.arange(hit_rows.shape[0], device=relevant.device) - first_hit[hit_rows]
    precision = (hit_index + 1).to(torch.float64) / (hit_ranks + 1).to(torch.float64)

    # Sum each row over k slots, a width that does not depend on the chunk,
    # so that chunking cannot change the order of the additions.
    slots = torch.zeros(relevant.shape, dtype=torch.float64, device=relevant.device)
    slots[hit_rows, hit_index] = precision
    ap = torch.where(hits > 0, slots.sum(dim=1) / hits.clamp(min=1), 0.0)
    return ap, hits


def _precision_at_recall_levels(relevant: Tensor, levels: Tensor) -> tuple[Tensor, Tensor]:
    """Return (rows, levels) precisions and a bool mask of rows with a relevant item.

    ``relevant`` covers the full ranking of each row. Rows without a relevant
    item get NaN precision, and the caller leaves them out.
    """
    n_relevant = relevant.sum(dim=1)
    targets = torch.floor(n_relevant.unsqueeze(1).to(torch.float64) * levels + 1e-9).to(torch.int64)

    # The r_num-th relevant item of a row sits at first_hit[row] + r_num - 1
    # in the flat hit list, because nonzero lists hits in (row, rank) order.
    hit_rows, hit_ranks = torch.nonzero(relevant, as_tuple=True)
    first_hit = torch.cumsum(n_relevant, dim=0) - n_relevant
    position = (first_hit.unsqueeze(1) + targets - 1).clamp(min=0)
    if hit_ranks.numel() > 0:
        rank = hit_ranks[position.clamp(max=hit_ranks.numel() - 1)] + 1
    else:
        rank = torch.ones_like(position)
    precision = torch.where(targets > 0, targets.to(torch.float64) / rank.to(torch.float64), 1.0)

    used = n_relevant > 0
    precision = torch.where(used.unsqueeze(1), precision, float("nan"))
    return precision, used


def _check_inputs(
    query_codes: Tensor, database_codes: Tensor, query_labels: Tensor, database_labels: Tensor
) -> tuple[Tensor, Tensor]:
    """Validate codes and labels together and return the packed label bits."""
    check_code_pair(query_codes, database_codes)
    _check_labels(query_labels, name="query_labels", codes=query_codes, codes_name="query_codes")
    _check_labels(database_labels, name="database_labels", codes=database_codes, codes_name="database_codes")
    if query_labels.shape[1] != database_labels.shape[1]:
        raise DataError(
            f"query_labels have {query_labels.shape[1]} classes but database_labels have "
            f"{database_labels.shape[1]}; both must use the dataset's full class list"
        )
    return _pack_labels(query_labels), _pack_labels(database_labels)


def _check_labels(labels: Tensor, *, name: str, codes: Tensor, codes_name: str) -> None:
    if labels.dim() != 2:
        raise DataError(
            f"{name} must be a 2-D (items, classes) multi-hot tensor, got shape {tuple(labels.shape)}"
        )
    if labels.shape[0] != codes.shape[0]:
        raise DataError(
            f"{name} has {labels.shape[0]} rows but {codes_name} has {codes.shape[0]}; "
            f"pass one label row per code, shape ({codes.shape[0]}, classes)"
        )
    if labels.device != codes.device:
        raise DataError(f"{name} is on {labels.device} but {codes_name} is on {codes.device}; move both to one device")
    valid = (labels == 0) | (labels == 1)
    if not bool(valid.all()):
        bad = labels[~valid][:3].tolist()
        raise DataError(
            f"{name} contain values other than 0 and 1 (for example {bad}); "
            "pass multi-hot labels, for example one_hot(class_ids, n_classes)"
        )


def _pack_labels(labels: Tensor) -> Tensor:
    """Pack 0/1 label rows into a (words, items) int64 tensor, 63 classes per word.

    Two items share a label exactly when, for some word, their entries have a
    common set bit. Words come first so that each word's row is contiguous.
    """
    n_items, n_classes = labels.shape
    n_words = max(1, -(-n_classes // _BITS_PER_WORD))
    padded = torch.zeros(n_items, n_words * _BITS_PER_WORD, dtype=torch.int64, device=labels.device)
    padded[:, :n_classes] = labels.to(torch.int64)
    powers = torch.pow(2, torch.arange(_BITS_PER_WORD, dtype=torch.int64, device=labels.device))
    packed = (padded.view(n_items, n_words, _BITS_PER_WORD) * powers).sum(dim=2)
    return packed.T.contiguous()


def _relevance(query_bits: Tensor, database_bits: Tensor, ranking: Tensor) -> Tensor:
    """Return the (rows, k) bool relevance of the ranked database items.

    ``query_bits`` is the (words, rows) slice for the ranked queries.
    """
    relevant = (database_bits[0][ranking] & query_bits[0].unsqueeze(1)) != 0
    for word in range(1, query_bits.shape[0]):
        relevant |= (database_bits[word][ranking] & query_bits[word].unsqueeze(1)) != 0
    return relevant


def _check_recall_levels(recall_levels: Tensor | None) -> Tensor:
    if recall_levels is None:
        return default_recall_levels()
    levels = torch.as_tensor(recall_levels, dtype=torch.float64).cpu()
    if levels.dim() != 1 or levels.numel() == 0:
        raise ConfigError(f"recall_levels must be a non-empty 1-D sequence, got shape {tuple(levels.shape)}")
    if bool(torch.isnan(levels).any()) or bool((levels < 0).any()) or bool((levels > 1).any()):
        raise ConfigError(f"recall_levels must lie in [0, 1], got {levels.tolist()}")
    return levels


def _check_n_values(n_values: Tensor | list[int] | None) -> Tensor:
    if n_values is None:
        return default_precision_at_n_grid()
    grid = torch.as_tensor(n_values).cpu()
    if grid.dim() != 1 or grid.numel() == 0:
        raise ConfigError(f"n_values must be a non-empty 1-D sequence of ints, got shape {tuple(grid.shape)}")
    if grid.is_floating_point() or grid.dtype == torch.bool:
        raise ConfigError(f"n_values must be ints, got dtype {grid.dtype}")
    if bool((grid <= 0).any()):
        raise ConfigError(f"n_values must be positive, got {grid.tolist()}")
    return grid.to(torch.int64)
