"""The mainstay-code attack of SAAT (Yuan et al., IEEE TIFS 2023).

The mainstay code of a label is the closed-form DMFL optimum over the
victim's training codes (``attacks._codes.mainstay_codes``). The
non-targeted attack pushes the query's code away from the mainstay code of
its own label, so it is label-aware; the targeted attack pulls it towards
the mainstay code of the target label.

Loss (SAAT's ``BaseGenerator``), with ``s = h * c`` element-wise over the batch:
non-targeted ``sum(m (s + 2) s) / sum(m)`` with ``m = [s > -0.5]``;
targeted ``-sum(m (s + 2) s) / sum(m)`` with ``m = [s < 0.5]``. Bits that
have already crossed the margin drop out. When every bit has (``sum(m) = 0``)
the loss is 0 instead of the reference's NaN; both leave the image unchanged.
Optimiser: sign-PGD, eps 8/255, step 1/255, 100 steps, random start, SAAT
tanh-scale schedule.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from attacks._base import ATTACKS, Attack, Capabilities
from attacks._codes import ZERO_BIT_RULES, mainstay_codes
from models.base import HashingModel
from models.errors import ConfigError


def masked_margin_loss(outputs: Tensor, codes: Tensor, *, targeted: bool) -> Tensor:
    similarity = outputs * codes
    mask = (similarity < 0.5) if targeted else (similarity > -0.5)
    mask = mask.to(outputs.dtype)
    count = mask.sum()
    if count == 0:
        return (outputs * 0).sum()
    value = (mask * (similarity + 2) * similarity).sum() / count
    return -value if targeted else value


@ATTACKS.register("mainstay")
class MainstayAttack(Attack):
    """Non-targeted mainstay-code attack: move away from the query label's mainstay code."""

    name = "mainstay"
    capabilities = Capabilities(targeted=False, label_aware=True, needs_train_codes=True)

    def __init__(self, *, zero_bits: str = "tie-break", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if zero_bits not in ZERO_BIT_RULES:
            raise ConfigError(f"unknown zero_bits {zero_bits!r}; valid: {', '.join(ZERO_BIT_RULES)}")
        self.zero_bits = zero_bits

    def method_config(self) -> dict[str, Any]:
        return {"zero_bits": self.zero_bits}

    def guide_codes(self, labels: Tensor, target_labels: Tensor | None) -> Tensor:
        source = target_labels if self.capabilities.targeted else labels
        bank = self.knowledge.train_codes.to(source.device)
        bank_labels = self.knowledge.train_labels.to(source.device)
        return mainstay_codes(source, bank, bank_labels, zero_bits=self.zero_bits, seed=self.seed)

    def _perturb(self, model: HashingModel, images: Tensor, labels: Tensor, target_labels: Tensor | None,
                 generator: torch.Generator) -> Tensor:
        codes = self.guide_codes(labels, target_labels)
        targeted = self.capabilities.targeted
        return self.sign_pgd(model, images, lambda h: masked_margin_loss(h, codes, targeted=targeted), generator)

    def _theory_codes(self, model: HashingModel, images: Tensor, labels: Tensor,
                      target_labels: Tensor | None) -> Tensor:
        codes = mainstay_codes(
            target_labels if self.capabilities.targeted else labels,
            self.knowledge.train_codes.to(images.device),
            self.knowledge.train_labels.to(images.device),
            zero_bits="tie-break",
            seed=self.seed,
        )
        return codes if self.capabilities.targeted else -codes


@ATTACKS.register("mainstay-targeted")
class TargetedMainstayAttack(MainstayAttack):
    """Targeted mainstay-code attack: move towards the target label's mainstay code."""

    name = "mainstay-targeted"
    capabilities = Capabilities(targeted=True, label_aware=True, needs_train_codes=True)
