"""Hadamard matrices and hash centres for CSQ.

``hadamard(n)`` builds an n x n {-1, +1} matrix with ``H H^T = n I`` by
Sylvester doubling and Paley's first construction (order ``q + 1`` for a
prime ``q = 3 mod 4``), which covers 1, 2, every power of two, and orders
such as 12, 20, 24, 44 and 48. It returns None for orders that neither
construction reaches (the SAAT code supports powers of two only).
"""

from __future__ import annotations

import torch
from torch import Tensor

from models.errors import ConfigError


def _is_prime(value: int) -> bool:
    if value < 2:
        return False
    divisor = 2
    while divisor * divisor <= value:
        if value % divisor == 0:
            return False
        divisor += 1
    return True


def _paley(q: int) -> Tensor:
    residues = {(x * x) % q for x in range(1, q)}
    chi = torch.tensor([0] + [1 if x in residues else -1 for x in range(1, q)], dtype=torch.int64)
    index = torch.arange(q)
    jacobsthal = chi[(index.view(1, -1) - index.view(-1, 1)) % q]
    skew = torch.zeros(q + 1, q + 1, dtype=torch.int64)
    skew[0, 1:] = 1
    skew[1:, 0] = -1
    skew[1:, 1:] = jacobsthal
    return skew + torch.eye(q + 1, dtype=torch.int64)


def hadamard(n: int) -> Tensor | None:
    """Return an n x n Hadamard matrix (float32), or None if none is constructed."""
    if n == 1:
        return torch.ones(1, 1)
    if n == 2:
        return torch.tensor([[1.0, 1.0], [1.0, -1.0]])
    if n % 4 == 0 and _is_prime(n - 1) and (n - 1) % 4 == 3:
        return _paley(n - 1).to(torch.float32)
    if n % 2 == 0:
        half = hadamard(n // 2)
        if half is not None:
            return torch.cat([torch.cat([half, half], 1), torch.cat([half, -half], 1)], 0)
    return None


def hash_centres(n_classes: int, n_bits: int, *, seed: int = 0, attempts: int = 20) -> tuple[Tensor, str]:
    """Return one {-1, +1} centre per class and the construction used.

    Rows of ``[H; -H]`` when a Hadamard matrix of order ``n_bits`` exists and
    ``2 * n_bits >= n_classes`` (the SAAT construction). Otherwise the missing
    centres are random balanced vectors (``n_bits / 2`` entries of -1), drawn
    with ``seed`` and redrawn up to ``attempts`` times until the minimum
    pairwise Hamming distance exceeds ``n_bits / 4`` and the mean distance is
    at least ``n_bits / 2``, as in the CgAT code.
    """
    if n_bits < 2:
        raise ConfigError(f"CSQ needs at least 2 bits, got {n_bits}")
    matrix = hadamard(n_bits)
    rows = torch.cat([matrix, -matrix], 0) if matrix is not None else torch.empty(0, n_bits)
    if rows.shape[0] >= n_classes:
        return rows[:n_classes].clone(), "hadamard"
    generator = torch.Generator().manual_seed(seed)
    missing = n_classes - rows.shape[0]
    best: Tensor | None = None
    best_min = -1.0
    for _ in range(attempts):
        extra = torch.ones(missing, n_bits)
        for row in extra:
            row[torch.randperm(n_bits, generator=generator)[: n_bits // 2]] = -1.0
        candidate = torch.cat([rows, extra], 0)
        distances = (n_bits - candidate @ candidate.T) / 2
        off_diagonal = distances[~torch.eye(n_classes, dtype=torch.bool)]
        min_distance = float(off_diagonal.min()) if off_diagonal.numel() else float(n_bits)
        if min_distance > best_min:
            best, best_min = candidate, min_distance
        if min_distance > n_bits / 4 and float(off_diagonal.mean()) >= n_bits / 2:
            break
    construction = "hadamard+random" if rows.shape[0] else "random"
    return best, construction  # type: ignore[return-value]
