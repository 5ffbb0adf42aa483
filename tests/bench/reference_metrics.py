"""Brute-force reference metrics: one query at a time, plain numpy loops.

Written for clarity, not speed, to check ``bench.metrics`` against. Inputs are
numpy arrays: codes in {-1, +1} of shape (items, bits) and 0/1 labels of
shape (items, classes).
"""

from __future__ import annotations

import math

import numpy as np


def hamming_row(query_code, database_codes):
    """Return the number of differing bits between one query and each database code."""
    distances = np.zeros(len(database_codes), dtype=np.int64)
    for j, code in enumerate(database_codes):
        distances[j] = int(np.sum(code != query_code))
    return distances


def ranking_row(query_code, database_codes):
    """Return database indices by ascending distance, ties by ascending index."""
    distances = hamming_row(query_code, database_codes)
    return np.argsort(distances, kind="stable")


def relevance_row(query_label, database_labels):
    """Return True where a database item shares at least one label with the query."""
    return np.array([float(np.dot(query_label, label)) > 0 for label in database_labels])


def ranked_relevance(query_code, query_label, database_codes, database_labels):
    """Return the query's relevance flags in ranking order."""
    order = ranking_row(query_code, database_codes)
    return relevance_row(query_label, database_labels)[order]


def average_precision_row(relevant_ranked, topk):
    """Return AP and hit count of one query over its first ``topk`` ranked items.

    AP is 0 when none of them is relevant.
    """
    found = 0
    total = 0.0
    for position in range(1, min(topk, len(relevant_ranked)) + 1):
        if relevant_ranked[position - 1]:
            found += 1
            total += found / position
    if found == 0:
        return 0.0, 0
    return total / found, found


def average_precisions(query_codes, database_codes, query_labels, database_labels, topk=None):
    """Return per-query AP and relevant-in-top-k counts as two numpy arrays."""
    if topk is None:
        topk = len(database_codes)
    aps = []
    hits = []
    for i in range(len(query_codes)):
        relevant = ranked_relevance(query_codes[i], query_labels[i], database_codes, database_labels)
        ap, found = average_precision_row(relevant, topk)
        aps.append(ap)
        hits.append(found)
    return np.array(aps), np.array(hits)


def mean_average_precision(query_codes, database_codes, query_labels, database_labels, topk=None, zero_hit="count"):
    aps, hits = average_precisions(query_codes, database_codes, query_labels, database_labels, topk)
    if zero_hit == "drop":
        kept_aps = [ap for ap, found in zip(aps, hits) if found > 0]
        return sum(kept_aps) / len(kept_aps) if kept_aps else 0.0
    return sum(aps) / len(aps)


def precision_recall_curve(query_codes, database_codes, query_labels, database_labels, recall_levels):
    """Return (mean precision per level, queries used, queries without relevant items)."""
    sums = np.zeros(len(recall_levels))
    used = 0
    skipped = 0
    for i in range(len(query_codes)):
        relevant = ranked_relevance(query_codes[i], query_labels[i], database_codes, database_labels)
        n_relevant = int(np.sum(relevant))
        if n_relevant == 0:
            skipped += 1
            continue
        used += 1
        relevant_positions = [p + 1 for p in range(len(relevant)) if relevant[p]]
        for level_index, level in enumerate(recall_levels):
            r_num = math.floor(n_relevant * level + 1e-9)
            if r_num == 0:
                sums[level_index] += 1.0
            else:
                sums[level_index] += r_num / relevant_positions[r_num - 1]
    means = sums / used if used > 0 else np.full(len(recall_levels), np.nan)
    return means, used, skipped


def precision_at_n(query_codes, database_codes, query_labels, database_labels, n_values):
    """Return the mean over queries of (relevant in the top N) / N for each N."""
    sums = np.zeros(len(n_values))
    for i in range(len(query_codes)):
        relevant = ranked_relevance(query_codes[i], query_labels[i], database_codes, database_labels)
        for index, n in enumerate(n_values):
            n = min(n, len(database_codes))
            sums[index] += np.sum(relevant[:n]) / n
    return sums / len(query_codes)
