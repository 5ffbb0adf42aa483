"""SAAT: semantic-aware adversarial training (Yuan et al., IEEE TIFS 2023).

Per mini-batch ``(x, y, I)``:

1. Inner maximisation: ``c = mainstay(y; B, Y)`` from the binary code bank
   ``B`` of the training set; sign-PGD on ``mean(F(x + delta) * c)`` pushes
   the adversarial code away from the mainstay code (eps 8/255, step 2/255,
   7 steps, random start, tanh scale 1).
2. Outer minimisation: ``B[I] <- sign(F(x))``, recompute ``c``, and minimise
   ``L_hash(F(x)) + lambda * (-mean(F(x_adv) * c)) + mu * mean((F(x_adv) - sign F(x_adv))**2)``
   with the victim's own hashing loss, ``lambda = 1`` and ``mu = 1e-4``.

Optimiser: SGD (lr 0.05, no momentum, weight decay 1e-5), batch 32, 20
epochs, lr x0.1 at 50 % and 75 % of the iterations. ``B`` starts from the
victim's eval-mode training codes and stays binary (``bank="binary"``).
``bank="reference_alias"`` reproduces the SAAT code, where the bank shares
storage with the hashing loss's buffer of continuous outputs, so most rows
hold tanh outputs after the first epoch.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from attacks import mainstay_codes
from defenses._base import DEFENSES, Defense
from models.base import HashingModel, HashLoss
from models.codes import binarize
from models.errors import ConfigError
from models.imageset import ImageSet

BANK_MODES = ("binary", "reference_alias")


@DEFENSES.register("saat")
class SAAT(Defense):
    """Adversarial training guided by mainstay codes."""

    name = "saat"
    default_epochs = 20
    default_lr = 0.05

    def __init__(self, *, lambda_: float = 1.0, mu: float = 1e-4, bank: str = "binary",
                 weight_decay: float = 1e-5, momentum: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if bank not in BANK_MODES:
            raise ConfigError(f"unknown SAAT bank {bank!r}; valid: {', '.join(BANK_MODES)}")
        self.lambda_ = float(lambda_)
        self.mu = float(mu)
        self.bank_mode = bank
        self.weight_decay = float(weight_decay)
        self.momentum = float(momentum)

    def method_config(self) -> dict[str, Any]:
        return {"lambda": self.lambda_, "mu": self.mu, "bank": self.bank_mode,
                "weight_decay": self.weight_decay, "momentum": self.momentum}

    def _setup(self, model: HashingModel, train_set: ImageSet, initial_codes: Tensor, device: torch.device) -> None:
        self.labels = train_set.labels.to(device)
        self.loss_fn = model.make_loss(len(train_set)).to(device)
        if isinstance(self.loss_fn, HashLoss):
            self.loss_fn.preload(initial_codes, self.labels)
        self.bank = initial_codes.clone()
        self.optimizer = torch.optim.SGD(model.parameters(), lr=self.lr, momentum=self.momentum,
                                         weight_decay=self.weight_decay)
        self.scheduler = self.multistep_scheduler(self.optimizer)
        self.iteration = 0

    def code_bank(self) -> Tensor:
        """Return the bank that mainstay codes are computed from."""
        if self.bank_mode == "reference_alias" and isinstance(self.loss_fn, HashLoss):
            return self.loss_fn.U
        return self.bank

    def guide_codes(self, labels: Tensor) -> Tensor:
        return mainstay_codes(labels, self.code_bank(), self.labels, zero_bits="tie-break", seed=self.seed)

    def _step(self, model: HashingModel, images: Tensor, labels: Tensor, indices: Tensor,
              generator: torch.Generator) -> dict[str, float]:
        codes = self.guide_codes(labels)
        adversarial = self.inner_attack(model, images, lambda h: (h * codes).mean(), generator)

        self.optimizer.zero_grad(set_to_none=True)
        scale = model.training_scale(self.iteration)
        adversarial_outputs = model(adversarial, scale)
        benign_outputs = model(images, scale)
        self.bank[indices] = binarize(benign_outputs.detach())
        hash_loss = self.loss_fn(benign_outputs, labels, indices)
        codes = self.guide_codes(labels)
        adversarial_term = -(adversarial_outputs * codes).mean()
        quantisation = ((adversarial_outputs - torch.sign(adversarial_outputs)) ** 2).mean()
        loss = hash_loss + self.lambda_ * adversarial_term + self.mu * quantisation
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        self.iteration += 1
        return {"loss": loss.item(), "hash_loss": hash_loss.item(), "adversarial": adversarial_term.item(),
                "quantisation": quantisation.item()}

    def _state(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "bank": self.bank.clone(), "loss": self.loss_fn.state_dict(), "iteration": self.iteration}

    def _load_state(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.bank.copy_(state["bank"])
        self.loss_fn.load_state_dict(state["loss"])
        self.iteration = int(state["iteration"])
