"""Exact Hamming ranking of a database for each query, computed in query chunks.

Ranking order: ascending Hamming distance, ties broken by ascending database
index. This matches ``np.argsort(distances, kind="stable")`` on each query's
distance row, so the same codes always give the same ranking and the same
metric values.

Distances come from float32 matrix products, d = (K - <q, x>) / 2. The
inner product of -1/+1 codes is an integer of magnitude at most K, which
float32 represents exactly for any K below 2**24.
"""

from __future__ import annotations

import numbers

import torch
from torch import Tensor

from models.codes import check_codes
from models.errors import ConfigError, DataError

# Elements in one chunk's (queries x database) matrix when ``chunk_size`` is
# not given. At 2**26, an int64 matrix of that size takes 512 MiB.
CHUNK_ELEMENTS = 2**26
# The CPU default is smaller. The top-k path never stores a full chunk matrix,
# and in benchmarks/evaluator.py (100,000 codes, 2-core CPU) chunks of 41 to
# 128 queries ran equally fast. 2**23 elements give 83 such queries.
CPU_CHUNK_ELEMENTS = 2**23

# Elements of one (queries x database block) product in the top-k path. A
# block is compared and searched right after the product, while it is still
# in cache, and the full (queries x database) matrix is never stored.
_BLOCK_ELEMENTS = 2**20

# Largest sort key of the top-k path that is stored as int32.
_INT32_KEY_LIMIT = 2**31 - 1

# Database items that the cut-off estimate samples (see ``_estimate_cutoffs``).
# More samples make a wrong estimate rarer and the estimate itself slower.
# A wrong estimate costs time, never exactness.
_SAMPLED_COLUMNS = 4096


def check_code_pair(query_codes: Tensor, database_codes: Tensor) -> None:
    """Raise ``DataError`` unless both code sets are valid and comparable.

    Both must be 2-D -1/+1 tensors with the same number of bits, at least one
    row each, on one device.
    """
    check_codes(query_codes, name="query_codes")
    check_codes(database_codes, name="database_codes", n_bits=query_codes.shape[1])
    if query_codes.shape[0] == 0:
        raise DataError("query_codes has no rows; pass at least one query code")
    if database_codes.shape[0] == 0:
        raise DataError("database_codes has no rows; pass at least one database code")
    if query_codes.device != database_codes.device:
        raise DataError(
            f"query_codes is on {query_codes.device} but database_codes is on "
            f"{database_codes.device}; move both to one device"
        )


def resolve_topk(topk: int | None, n_database: int) -> int:
    """Return the number of ranked items to keep: ``topk`` clamped to ``n_database``.

    ``None`` means the whole database. Raises ``ConfigError`` for anything
    other than ``None`` or a positive int, so -1 is rejected, not read as "all".
    """
    if topk is None:
        return n_database
    if isinstance(topk, bool) or not isinstance(topk, numbers.Integral) or topk <= 0:
        raise ConfigError(f"topk must be a positive int or None (whole database), got {topk!r}")
    return min(int(topk), n_database)


def resolve_chunk_size(chunk_size: int | None, n_database: int, *, device: torch.device | None = None) -> int:
    """Return the number of queries per chunk.

    ``None`` picks the largest chunk whose (queries x database) matrix has at
    most ``CPU_CHUNK_ELEMENTS`` elements on the CPU, or ``CHUNK_ELEMENTS`` on
    other devices, and at least one query.
    """
    if chunk_size is None:
        budget = CPU_CHUNK_ELEMENTS if device is None or torch.device(device).type == "cpu" else CHUNK_ELEMENTS
        return max(1, budget // n_database)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, numbers.Integral) or chunk_size <= 0:
        raise ConfigError(f"chunk_size must be a positive int or None, got {chunk_size!r}")
    return int(chunk_size)


def rank_database(
    *,
    query_codes: Tensor,
    database_codes: Tensor,
    topk: int | None = None,
    chunk_size: int | None = None,
) -> Tensor:
    """Rank the database for every query and return the first ``topk`` indices.

    Returns a (queries, k) int64 tensor on the codes' device, where k is
    ``topk`` clamped to the database size (``None`` means all of it). Row i
    lists database indices by ascending Hamming distance to query i, ties by
    ascending index.
    """
    check_code_pair(query_codes, database_codes)
    n_database = database_codes.shape[0]
    k = resolve_topk(topk, n_database)
    step = resolve_chunk_size(chunk_size, n_database, device=query_codes.device)

    ranker = HammingRanker(database_codes)
    ranked = []
    for start in range(0, query_codes.shape[0], step):
        ranked.append(ranker.rank(query_codes[start : start + step], k).to(torch.int64))
    return torch.cat(ranked)


def distances_from_inner(inner: Tensor, n_bits: int) -> Tensor:
    """Convert inner products of -1/+1 codes to int64 Hamming distances."""
    # n_bits - inner is even, so the halving is exact.
    return ((n_bits - inner) * 0.5).to(torch.int64)


class HammingRanker:
    """Hamming ranking of one validated database, applied to chunks of queries.

    Keeps the float32 database and the sample that the cut-off estimate
    ranks, so that successive chunks reuse them.
    """

    def __init__(self, database_codes: Tensor) -> None:
        self.database = database_codes.to(torch.float32)
        self.n_database, self.n_bits = self.database.shape
        self.stride = max(1, self.n_database // _SAMPLED_COLUMNS)
        self.sample = self.database[:: self.stride].contiguous()

    def rank(self, query_chunk: Tensor, k: int) -> Tensor:
        """Return the (queries, k) ranking of a chunk of validated codes.

        ``k`` must lie in [1, database size]. The indices are int32 or int64,
        depending on the path, and either dtype works as an index tensor.
        """
        query_chunk = query_chunk.to(torch.float32)
        if k == self.n_database:
            distances = distances_from_inner(query_chunk @ self.database.T, self.n_bits)
            return torch.sort(distances, dim=1, stable=True).indices
        return self._top_k(query_chunk, k)

    def _top_k(self, query_chunk: Tensor, k: int) -> Tensor:
        # Rows per flat sort so that the sort keys fit in int32. A flat int32
        # sort took less than half the time of an int64 sort of the same keys
        # (torch 2.14, one thread of a 2-core x86 CPU).
        row_span = (2 * self.n_bits + 1) * self.n_database
        rows_per_sort = max(1, _INT32_KEY_LIMIT // row_span)
        if query_chunk.shape[0] <= rows_per_sort:
            return self._top_k_rows(query_chunk, k)
        parts = [self._top_k_rows(rows, k) for rows in query_chunk.split(rows_per_sort)]
        return torch.cat(parts)

    def _top_k_rows(self, query_chunk: Tensor, k: int) -> Tensor:
        """Return the first k ranked indices per row without sorting whole rows.

        Distances are integers in [0, K], so the k-th ranked item of a row lies
        at some cut-off distance d*, and the top k are all items with d < d*
        plus the first items at d == d* in index order. The steps:

        1. Estimate a cut-off t per row from a sample of the database.
        2. Collect the candidates, all items with d <= t. A row with fewer
           than k candidates had t < d*. Such rows are redone with the exact
           d* from a full histogram of their distances.
        3. Sort the candidates by (row, distance, index) with one flat sort
           and keep the first k of each row.
        """
        cutoffs = self._estimate_cutoffs(query_chunk, k)
        ranked, done = self._select(query_chunk, k, cutoffs)
        if bool(done.all()):
            return ranked

        redo = ~done
        redo_queries = query_chunk[redo]
        exact = _exact_cutoffs(redo_queries @ self.database.T, self.n_bits, k)
        redone, _ = self._select(redo_queries, k, exact)
        ranking = torch.empty(query_chunk.shape[0], k, dtype=torch.int64, device=query_chunk.device)
        ranking[done] = ranked.to(torch.int64)
        ranking[redo] = redone.to(torch.int64)
        return ranking

    def _estimate_cutoffs(self, query_chunk: Tensor, k: int) -> Tensor:
        """Estimate, per row, a distance t that has at least k items with d <= t.

        Ranks every s-th database item, scales the sample's cumulative
        histogram by s and returns the smallest distance whose scaled count
        reaches k. An estimate that is too low only sends its row to the
        exact fallback.
        """
        n_rows = query_chunk.shape[0]
        n_levels = self.n_bits + 1
        # One product gives row * (K + 1) + d for every sampled item:
        # d = K/2 - inner/2, and the row offset turns one flat bincount into
        # per-row histograms. All values are small integers, exact in float32.
        offsets = torch.arange(n_rows, device=query_chunk.device, dtype=torch.float32).unsqueeze(1)
        offsets = offsets * n_levels + self.n_bits / 2
        flat = torch.addmm(offsets, query_chunk, self.sample.T, alpha=-0.5).to(torch.int64)
        counts = torch.bincount(flat.view(-1), minlength=n_rows * n_levels).view(n_rows, n_levels)
        scaled = counts.cumsum(dim=1) * self.stride
        return (scaled < k).sum(dim=1).clamp_(max=self.n_bits)

    def _select(self, query_chunk: Tensor, k: int, cutoffs: Tensor) -> tuple[Tensor, Tensor]:
        """Rank the rows that have at least k items with d <= cutoff.

        Returns the (m, k) ranking of those rows and a bool mask over all rows
        that marks them. Exact cut-offs (t >= d*) make every row qualify.
        """
        n_rows = query_chunk.shape[0]
        n_database = self.n_database
        rows, columns, products = self._candidates(query_chunk, cutoffs)
        per_row = torch.bincount(rows, minlength=n_rows)
        done = per_row >= k
        all_done = bool(done.all())

        # Sort key row * S + index + (K - inner) * N. Within a row, a larger
        # inner product (smaller distance) gives a smaller key, and the index
        # breaks ties. K - inner lies in [0, 2K], so S = (2K + 1) * N keeps the
        # rows apart, and key mod N recovers the index. ``_candidates`` has
        # already added K * N to the indices.
        row_span = (2 * self.n_bits + 1) * n_database
        keys = torch.add(columns, rows, alpha=row_span)
        keys.sub_(products.to(torch.int64), alpha=n_database)
        if n_rows * row_span <= _INT32_KEY_LIMIT:
            keys = keys.to(torch.int32)
        keys = torch.sort(keys).values

        starts = torch.cumsum(per_row, dim=0) - per_row
        if not all_done:
            starts = starts[done]
        first_k = starts.unsqueeze(1) + torch.arange(k, device=keys.device)
        ranked = keys.take(first_k).remainder_(n_database)
        return ranked, done

    def _candidates(self, query_chunk: Tensor, cutoffs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Return row, database index + K * N and inner product of every item with d <= cutoff.

        Works through the database in column blocks small enough to stay in
        cache from the product to the comparison and the extraction.
        """
        n_rows = query_chunk.shape[0]
        min_inner = (self.n_bits - 2 * cutoffs).to(torch.float32).unsqueeze(1)
        block = max(1, _BLOCK_ELEMENTS // n_rows)
        index_offset = self.n_bits * self.n_database
        rows, columns, products = [], [], []
        for start in range(0, self.n_database, block):
            inner = query_chunk @ self.database[start : start + block].T
            block_rows, block_columns = torch.nonzero(inner >= min_inner, as_tuple=True)
            flat = torch.add(block_columns, block_rows, alpha=inner.shape[1])
            products.append(inner.view(-1).take(flat))
            rows.append(block_rows)
            columns.append(block_columns.add_(start + index_offset))
        return torch.cat(rows), torch.cat(columns), torch.cat(products)


def _exact_cutoffs(inner: Tensor, n_bits: int, k: int) -> Tensor:
    """Return d* per row: the smallest distance with at least k items at or below it."""
    counts = _row_histograms(distances_from_inner(inner, n_bits), n_bits)
    return (counts.cumsum(dim=1) < k).sum(dim=1)


def _row_histograms(distances: Tensor, n_bits: int) -> Tensor:
    """Count each distance 0..K per row with one flat ``bincount``."""
    n_rows = distances.shape[0]
    n_levels = n_bits + 1
    offsets = torch.arange(n_rows, device=distances.device).unsqueeze(1) * n_levels
    flat = (distances + offsets).reshape(-1)
    return torch.bincount(flat, minlength=n_rows * n_levels).view(n_rows, n_levels)
