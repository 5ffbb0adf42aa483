"""Binary hash codes in {-1, +1}.

Sign rule: ``binarize`` maps 0 to +1. ``torch.sign`` returns 0 there, which
would leave a third value in a code; the original SAAT code has that quirk,
where a zero bit counts as half a Hamming unit. Every code that HashBench
stores or ranks goes through ``binarize``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from models.errors import DataError


def binarize(values: Tensor) -> Tensor:
    """Return +1 where ``values >= 0`` and -1 elsewhere, as float32."""
    return torch.where(values >= 0, 1.0, -1.0).to(torch.float32)


def check_codes(codes: Tensor, *, name: str = "codes", n_bits: int | None = None) -> Tensor:
    """Raise ``DataError`` unless ``codes`` is a 2-D tensor of -1/+1 values."""
    if codes.dim() != 2:
        raise DataError(f"{name} must be a 2-D (items, bits) tensor, got shape {tuple(codes.shape)}")
    if n_bits is not None and codes.shape[1] != n_bits:
        raise DataError(
            f"{name} have {codes.shape[1]} bits but {n_bits} were expected; "
            "encode both sides with the same model"
        )
    valid = (codes == 1) | (codes == -1)
    if not bool(valid.all()):
        bad = codes[~valid][:3].tolist()
        raise DataError(
            f"{name} contain values other than -1 and +1 (for example {bad}); "
            "binarize continuous outputs with models.codes.binarize first"
        )
    return codes


def hamming_distances(query_codes: Tensor, database_codes: Tensor) -> Tensor:
    """Return the (queries, database) Hamming distance matrix of -1/+1 codes.

    Uses d = (K - <q, d>) / 2, exact in float32 for any K below 2**24.
    """
    n_bits = query_codes.shape[1]
    inner = query_codes.to(torch.float32) @ database_codes.to(torch.float32).T
    return ((n_bits - inner) / 2).round_().to(torch.int64)
