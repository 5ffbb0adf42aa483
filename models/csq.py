"""CSQ: central similarity quantisation (Yuan et al., CVPR 2020), SAAT version.

Each class owns a hash centre (``models.hadamard.hash_centres``). A sample's
centre is ``sign(y^T centres)``, with zero entries taken from a fixed random
tie-break vector ``r``. For a single label that is the class centre itself.
``L = BCE((u + 1) / 2, (c + 1) / 2) + lambda_q * mean((|u| - 1)**2)`` with
``lambda_q = 0.05`` (SAAT; CgAT and DeepHash-pytorch use 1e-4).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from models.base import MODELS, HashingModel
from models.hadamard import hash_centres


class CSQLoss(nn.Module):
    def __init__(self, centres: Tensor, tie_break: Tensor, lambda_q: float) -> None:
        super().__init__()
        self.register_buffer("centres", centres.clone())
        self.register_buffer("tie_break", tie_break.clone())
        self.lambda_q = lambda_q

    def sample_centres(self, labels: Tensor) -> Tensor:
        votes = labels @ self.centres
        return torch.where(votes > 0, 1.0, torch.where(votes < 0, -1.0, self.tie_break.expand_as(votes)))

    def forward(self, outputs: Tensor, labels: Tensor, indices: Tensor) -> Tensor:
        targets = (self.sample_centres(labels.to(outputs.dtype)) + 1) / 2
        # Written out rather than F.binary_cross_entropy, which raises on NaN
        # inputs; a NaN must reach the training loop's divergence check.
        probabilities = ((outputs + 1) / 2).clamp(1e-7, 1 - 1e-7)
        centre_loss = -(targets * probabilities.log() + (1 - targets) * (1 - probabilities).log()).mean()
        quantisation = ((outputs.abs() - 1) ** 2).mean()
        return centre_loss + self.lambda_q * quantisation


@MODELS.register("csq")
class CSQ(HashingModel):
    """Hashing network trained towards per-class hash centres."""

    name = "csq"

    def __init__(self, *, lambda_q: float = 0.05, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        centres, construction = hash_centres(self.n_classes, self.n_bits, seed=self._config["seed"])
        generator = torch.Generator().manual_seed(self._config["seed"] + 1)
        tie_break = torch.randint(0, 2, (self.n_bits,), generator=generator).float() * 2 - 1
        self.register_buffer("centres", centres)
        self.register_buffer("tie_break", tie_break)
        self.lambda_q = float(lambda_q)
        self.centre_construction = construction
        self._config.update(lambda_q=self.lambda_q)

    def make_loss(self, n_train: int) -> CSQLoss:
        return CSQLoss(self.centres, self.tie_break, self.lambda_q)
