"""HashNet: class-balanced pairwise loss with tanh continuation (Cao et al., ICCV 2017).

``theta_ij = a <u_i, U_j>`` with ``a = 10 / K`` in the SAAT code
(``pair_scale="saat"``) or ``a = 0.1`` in the ProS-GAN, TADH and CgAT code
(``pair_scale="prosgan"``). Pair losses ``softplus(theta) - s theta`` are
weighted by ``total / positives`` and ``total / negatives`` and summed over
``total``.

Continuation: every training forward advances a counter, and whenever it is a
multiple of 200 the tanh scale becomes ``sqrt(1 + 0.005 * counter)``. The
counter and scale are explicit training state (saved in checkpoints), not a
side effect of ``forward``. Outside training the scale is 1, as in SAAT;
``eval_scale="continuation"`` keeps the last training scale, as the ProS-GAN
and TADH networks do. Sign codes are the same either way.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from models.base import MODELS, HashingModel, HashLoss
from models.errors import ConfigError

CONTINUATION_PERIOD = 200


class HashNetLoss(HashLoss):
    def __init__(self, n_train: int, n_bits: int, n_classes: int, *, pair_scale: float) -> None:
        super().__init__(n_train, n_bits, n_classes)
        self.pair_scale = pair_scale

    def forward(self, outputs: Tensor, labels: Tensor, indices: Tensor) -> Tensor:
        self.remember(outputs, labels, indices)
        similarity = (labels @ self.Y.T > 0).to(outputs.dtype)
        theta = self.pair_scale * (outputs @ self.U.T)
        pair_loss = F.softplus(theta) - similarity * theta
        positives = similarity.sum()
        negatives = similarity.numel() - positives
        total = float(similarity.numel())
        positive_weight = total / positives if positives > 0 else torch.zeros(())
        negative_weight = total / negatives if negatives > 0 else torch.zeros(())
        weights = torch.where(similarity > 0, positive_weight, negative_weight)
        return (pair_loss * weights).sum() / total


@MODELS.register("hashnet")
class HashNet(HashingModel):
    """Hashing network trained with the HashNet loss and tanh continuation."""

    name = "hashnet"

    def __init__(
        self,
        *,
        pair_scale: Literal["saat", "prosgan"] | float = "saat",
        eval_scale: Literal["one", "continuation"] = "one",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if eval_scale not in ("one", "continuation"):
            raise ConfigError(f"unknown HashNet eval_scale {eval_scale!r}; valid: 'one', 'continuation'")
        if pair_scale == "saat":
            self.pair_scale = 10.0 / self.n_bits
        elif pair_scale == "prosgan":
            self.pair_scale = 0.1
        elif isinstance(pair_scale, (int, float)) and pair_scale > 0:
            self.pair_scale = float(pair_scale)
        else:
            raise ConfigError(
                f"invalid HashNet pair_scale {pair_scale!r}; use 'saat' (10/K), 'prosgan' (0.1) or a positive number"
            )
        self.eval_scale = eval_scale
        self.iteration = 0
        self.continuation_scale = 1.0
        self.register_buffer("output_scale", torch.ones(()))
        self._config.update(pair_scale=pair_scale, eval_scale=eval_scale)

    def forward(self, images: Tensor, scale: float = 1.0) -> Tensor:
        if not self.training and self.eval_scale == "continuation":
            scale = scale * float(self.output_scale)
        return torch.tanh(scale * self.pre_activation(images))

    def make_loss(self, n_train: int) -> HashNetLoss:
        return HashNetLoss(n_train, self.n_bits, self.n_classes, pair_scale=self.pair_scale)

    def training_scale(self, step: int) -> float:
        self.iteration += 1
        if self.iteration % CONTINUATION_PERIOD == 0:
            self.continuation_scale = math.sqrt(1.0 + 0.005 * self.iteration)
            self.output_scale.fill_(self.continuation_scale)
        return self.continuation_scale

    def training_state(self) -> dict[str, Any]:
        return {"iteration": self.iteration, "continuation_scale": self.continuation_scale}

    def load_training_state(self, state: dict[str, Any]) -> None:
        self.iteration = int(state.get("iteration", 0))
        self.continuation_scale = float(state.get("continuation_scale", 1.0))
