"""DPSH: pairwise likelihood loss with a quantisation penalty (Li et al., IJCAI 2016).

``theta_ij = <u_i, U_j> / 2``;
``L = -sum_ij (s_ij theta_ij - softplus(theta_ij)) / (N n) + eta * sum_i ||sign(u_i) - u_i||^2 / (N n)``
with ``eta = 50`` as in the SAAT, ProS-GAN and TADH code. The quantisation
term is also divided by ``N n`` although it sums over the batch only, as in
the original DPSH PyTorch code. ``variant="cgat"`` uses plain means for both
terms with ``eta = 0.001`` (the CgAT code).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from models.base import MODELS, HashingModel, HashLoss
from models.errors import ConfigError


class DPSHLoss(HashLoss):
    def __init__(self, n_train: int, n_bits: int, n_classes: int, *, eta: float, variant: str) -> None:
        super().__init__(n_train, n_bits, n_classes)
        self.eta = eta
        self.variant = variant

    def forward(self, outputs: Tensor, labels: Tensor, indices: Tensor) -> Tensor:
        self.remember(outputs, labels, indices)
        similarity = (labels @ self.Y.T > 0).to(outputs.dtype)
        theta = outputs @ self.U.T / 2
        log_likelihood = similarity * theta - F.softplus(theta)
        quantisation = (torch.sign(outputs) - outputs) ** 2
        if self.variant == "cgat":
            return -log_likelihood.mean() + self.eta * quantisation.mean()
        pairs = theta.numel()
        return -log_likelihood.sum() / pairs + self.eta * quantisation.sum() / pairs


@MODELS.register("dpsh")
class DPSH(HashingModel):
    """Hashing network trained with the DPSH pairwise likelihood loss."""

    name = "dpsh"

    def __init__(self, *, eta: float | None = None, variant: Literal["saat", "cgat"] = "saat", **kwargs) -> None:
        super().__init__(**kwargs)
        if variant not in ("saat", "cgat"):
            raise ConfigError(f"unknown DPSH variant {variant!r}; valid: 'saat', 'cgat'")
        if eta is None:
            eta = 50.0 if variant == "saat" else 0.001
        self.eta = float(eta)
        self.variant = variant
        self._config.update(eta=self.eta, variant=variant)

    def make_loss(self, n_train: int) -> DPSHLoss:
        return DPSHLoss(n_train, self.n_bits, self.n_classes, eta=self.eta, variant=self.variant)
