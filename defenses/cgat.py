"""CgAT: centre-guided adversarial training (Wang et al., WWW 2023).

Like SAAT, but the guiding code is the centre code: the unweighted mean of
the bank codes that share a label with ``y`` minus the mean of those that
share none (``attacks.center_codes``). The code is all zeros when either
side is empty.
The inner attack minimises ``mean(F(x + delta) * c)``, and the outer loss is
``L_hash(F(x)) - mean(F(x_adv) * c)``: SAAT's loss with ``lambda = 1`` and ``mu = 0``. Optimiser: SGD (lr 0.01, momentum 0.9,
weight decay 5e-4), batch 32, 30 epochs, lr x0.1 at 50 % and 75 % of the
iterations. The bank starts from the victim's eval-mode training codes and
stays binary; the CgAT code aliases it with continuous outputs
(``bank="reference_alias"`` reproduces that).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from attacks import center_codes
from defenses._base import DEFENSES
from defenses.saat import SAAT
from models.errors import ConfigError


@DEFENSES.register("cgat")
class CgAT(SAAT):
    """Adversarial training guided by centre codes."""

    name = "cgat"
    default_epochs = 30
    default_lr = 0.01

    def __init__(self, *, weight_decay: float = 5e-4, momentum: float = 0.9, **kwargs: Any) -> None:
        fixed = sorted(set(kwargs) & {"mu", "lambda_"})
        if fixed:
            raise ConfigError(f"CgAT has no {', '.join(fixed)} setting: its loss is L_hash - mean(h_adv * c)")
        super().__init__(lambda_=1.0, mu=0.0, weight_decay=weight_decay, momentum=momentum, **kwargs)

    def method_config(self) -> dict[str, Any]:
        return {"lambda": 1.0, "mu": 0.0, "bank": self.bank_mode, "weight_decay": self.weight_decay, "momentum": self.momentum}

    def guide_codes(self, labels: Tensor) -> Tensor:
        return center_codes(labels, self.code_bank(), self.labels, zero_bits="keep")
