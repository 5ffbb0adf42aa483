"""Retrieval metrics of hash codes and perceptibility metrics of adversarial images.

Retrieval: ``mean_average_precision`` (MAP@k, and t-MAP when called with the
target labels), ``average_precisions`` (per-query AP@k),
``precision_recall_curve`` and ``precision_at_n_curve``, all on the exact
Hamming ranking of ``rank_database``. Perceptibility: ``perturbation_norms``
and, for comparison with published SAAT tables only,
``saat_parity_perceptibility``.
"""

from bench.metrics.perceptibility import (
    PerturbationNorms,
    SaatParityNumbers,
    perturbation_norms,
    saat_parity_perceptibility,
)
from bench.metrics.ranking import rank_database
from bench.metrics.retrieval import (
    AveragePrecisions,
    PrecisionAtNCurve,
    PrecisionRecallCurve,
    average_precisions,
    default_precision_at_n_grid,
    default_recall_levels,
    mean_average_precision,
    precision_at_n_curve,
    precision_recall_curve,
)

__all__ = [
    "AveragePrecisions",
    "PerturbationNorms",
    "PrecisionAtNCurve",
    "PrecisionRecallCurve",
    "SaatParityNumbers",
    "average_precisions",
    "default_precision_at_n_grid",
    "default_recall_levels",
    "mean_average_precision",
    "perturbation_norms",
    "precision_at_n_curve",
    "precision_recall_curve",
    "rank_database",
    "saat_parity_perceptibility",
]
