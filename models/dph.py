"""DPH: the pairwise inner-product loss used by the HAG paper and the SAAT code.

``L = mean_ij (<u_i, U_j> / K - s_ij)**2`` over the batch x training-set pair
matrix, with ``s_ij = +1`` for pairs that share a label and ``-1`` otherwise.
"""

from __future__ import annotations

from torch import Tensor

from models.base import MODELS, HashingModel, HashLoss


class DPHLoss(HashLoss):
    def forward(self, outputs: Tensor, labels: Tensor, indices: Tensor) -> Tensor:
        self.remember(outputs, labels, indices)
        signed_similarity = (labels @ self.Y.T > 0).to(outputs.dtype) * 2 - 1
        theta = outputs @ self.U.T / self.n_bits
        return ((theta - signed_similarity) ** 2).mean()


@MODELS.register("dph")
class DPH(HashingModel):
    """Hashing network trained with the DPH pairwise loss."""

    name = "dph"

    def make_loss(self, n_train: int) -> DPHLoss:
        return DPHLoss(n_train, self.n_bits, self.n_classes)
