"""Retrieval quality of a set of query codes: MAP@k, PR and precision@N together."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from bench.metrics import mean_average_precision, precision_at_n_curve, precision_recall_curve


def retrieval_report(
    *,
    query_codes: Tensor,
    database_codes: Tensor,
    query_labels: Tensor,
    database_labels: Tensor,
    topk: int | None,
    curves: bool = True,
) -> dict[str, Any]:
    """Return MAP@topk and, with ``curves``, the PR and precision@N curves as lists."""
    arguments = dict(
        query_codes=query_codes,
        database_codes=database_codes,
        query_labels=query_labels,
        database_labels=database_labels,
    )
    report: dict[str, Any] = {"map": mean_average_precision(**arguments, topk=topk), "topk": topk}
    if curves:
        pr = precision_recall_curve(**arguments)
        pn = precision_at_n_curve(**arguments)
        report["pr_curve"] = {
            "recall": pr.recall.tolist(),
            "precision": pr.precision.tolist(),
            "queries_without_relevant": pr.n_queries_without_relevant,
        }
        report["precision_at_n"] = {"n": pn.n.tolist(), "precision": pn.precision.tolist()}
    return report
