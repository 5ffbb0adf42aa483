"""Code-level building blocks that attacks and defenses share.

Mainstay codes (SAAT), centre codes (CgAT) and anchor codes (DHTA) are
computed here from a bank of training or database codes and their labels.
"""

from __future__ import annotations

import torch
from torch import Tensor

from models.errors import DataError

ZERO_BIT_RULES = ("tie-break", "keep")


def tie_break_vector(n_bits: int, seed: int = 0) -> Tensor:
    """Return the fixed random -1/+1 vector that fills zero bits of voted codes."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 2, (n_bits,), generator=generator).to(torch.float32) * 2 - 1


# Votes closer to zero than this are ties: normalised weights turn an exact
# tie into a rounding residue of about 1e-7.
TIE_TOLERANCE = 1e-6


def signed_vote(votes: Tensor, zero_bits: str = "tie-break", seed: int = 0) -> Tensor:
    """Return ``sign(votes)`` with tied entries kept as 0 (parity) or filled from the tie-break vector."""
    codes = torch.where(votes.abs() <= TIE_TOLERANCE, torch.zeros_like(votes), torch.sign(votes))
    if zero_bits == "keep":
        return codes
    if zero_bits != "tie-break":
        raise DataError(f"unknown zero-bit rule {zero_bits!r}; valid: {', '.join(ZERO_BIT_RULES)}")
    fill = tie_break_vector(votes.shape[-1], seed).to(votes.device).expand_as(codes)
    return torch.where(codes == 0, fill, codes)


def _check_bank(labels: Tensor, bank_codes: Tensor, bank_labels: Tensor) -> None:
    if bank_codes.shape[0] != bank_labels.shape[0]:
        raise DataError(
            f"code bank has {bank_codes.shape[0]} rows but {bank_labels.shape[0]} label rows"
        )
    if labels.shape[1] != bank_labels.shape[1]:
        raise DataError(
            f"labels have {labels.shape[1]} classes but the bank's labels have {bank_labels.shape[1]}"
        )


def mainstay_votes(labels: Tensor, bank_codes: Tensor, bank_labels: Tensor) -> Tensor:
    """Return the DMFL objective's per-bit votes for each label row (before sign).

    Positive weights are cosine label similarities ``<l, y_j> / (|l| |y_j| + 1e-8)``
    normalised to sum 1. Negative weights are uniform over the rows that share
    no label with ``l``. An empty side (no positive or no negative row) gets
    all-zero weights instead of a division by zero. The vote is
    ``sum_j w+_j b_j - sum_j w-_j b_j``; its sign maximises
    ``sum_j w+_j <b, b_j> - sum_j w-_j <b, b_j>`` over ``b`` in {-1, +1}^K.
    A row with an all-zero label has no positives, so its code is
    ``sign(-mean_j b_j)``, and all-zero bank rows always count as negatives.
    """
    _check_bank(labels, bank_codes, bank_labels)
    labels = labels.to(bank_codes.dtype)
    bank_labels = bank_labels.to(bank_codes.dtype)
    overlap = labels @ bank_labels.T
    norms = labels.norm(dim=1, keepdim=True) * bank_labels.norm(dim=1).unsqueeze(0)
    positive = overlap / (norms + 1e-8)
    negative = (overlap <= 0).to(bank_codes.dtype)
    positive = positive / _safe_sum(positive)
    negative = negative / _safe_sum(negative)
    return positive @ bank_codes - negative @ bank_codes


def mainstay_codes(
    labels: Tensor, bank_codes: Tensor, bank_labels: Tensor, *, zero_bits: str = "tie-break", seed: int = 0
) -> Tensor:
    """Return SAAT's mainstay code (the closed-form DMFL optimum) for each label row."""
    return signed_vote(mainstay_votes(labels, bank_codes, bank_labels), zero_bits, seed)


def center_codes(
    labels: Tensor, bank_codes: Tensor, bank_labels: Tensor, *, zero_bits: str = "keep", seed: int = 0
) -> Tensor:
    """Return CgAT's centre code: mean of similar bank codes minus mean of dissimilar ones.

    Unlike the mainstay code the positives are not weighted; the Jaccard
    similarity of the CgAT code only splits positives from negatives. When
    either side is empty the code is all zeros (no guidance), as in CgAT.
    """
    _check_bank(labels, bank_codes, bank_labels)
    overlap = labels.to(bank_codes.dtype) @ bank_labels.to(bank_codes.dtype).T
    positive = (overlap > 0).to(bank_codes.dtype)
    negative = 1 - positive
    n_positive = positive.sum(1, keepdim=True)
    n_negative = negative.sum(1, keepdim=True)
    # Sum first and divide once, so equal means cancel exactly.
    votes = (positive @ bank_codes) / n_positive.clamp(min=1) - (negative @ bank_codes) / n_negative.clamp(min=1)
    degenerate = (n_positive == 0) | (n_negative == 0)
    votes = torch.where(degenerate, torch.zeros_like(votes), votes)
    codes = signed_vote(votes, zero_bits, seed)
    return torch.where(degenerate, torch.zeros_like(codes), codes)


def anchor_codes(
    target_labels: Tensor,
    database_codes: Tensor,
    database_labels: Tensor,
    *,
    n_anchor: int,
    generator: torch.Generator,
    replace: bool = False,
    zero_bits: str = "tie-break",
    seed: int = 0,
) -> Tensor:
    """Return DHTA's anchor code per target: the bit-wise vote of ``n_anchor`` database codes.

    The voters are database items whose label vector equals the target label
    exactly, drawn without replacement by default (DHTA) or with replacement
    (``replace=True``, the SAAT re-implementation). The vote minimises the
    summed Hamming distance to the voters; an odd ``n_anchor`` has no ties.
    """
    _check_bank(target_labels, database_codes, database_labels)
    anchors = torch.empty(target_labels.shape[0], database_codes.shape[1], dtype=database_codes.dtype)
    matches_cache: dict[bytes, Tensor] = {}
    for row, target in enumerate(target_labels):
        key = target.to(torch.uint8).cpu().numpy().tobytes()
        if key not in matches_cache:
            matches_cache[key] = torch.nonzero((database_labels == target).all(dim=1)).flatten().cpu()
        matches = matches_cache[key]
        if len(matches) == 0 or (not replace and len(matches) < n_anchor):
            raise DataError(
                f"target label {target.nonzero().flatten().tolist()} has {len(matches)} exact matches in the "
                f"database but {n_anchor} anchors are needed; choose targets with select_target_labels(min_count={n_anchor})"
            )
        if replace:
            chosen = matches[torch.randint(0, len(matches), (n_anchor,), generator=generator)]
        else:
            chosen = matches[torch.randperm(len(matches), generator=generator)[:n_anchor]]
        anchors[row] = database_codes[chosen.to(database_codes.device)].sum(0)
    return signed_vote(anchors, zero_bits, seed)


def _safe_sum(weights: Tensor) -> Tensor:
    total = weights.sum(1, keepdim=True)
    return torch.where(total > 0, total, torch.ones_like(total))
