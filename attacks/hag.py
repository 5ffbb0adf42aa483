"""HAG (Yang et al., "Adversarial Examples for Hamming Space Search"), as in the SAAT code.

A non-targeted, label-free attack: it pushes every bit of the query's code
away from the query's clean output ``h = model(x)`` (scale 1, detached).
With ``g = model(x_adv, scale)``, the per-image loss is

    ((sum_k m_k g_k h_k) / (sum_k m_k + 1e-8) + 1) ** 2 + beta * (mean_k g_k) ** 2

with the bit mask ``m_k = (sign((1 + tau) - |g_k - sign(h_k)|) + 1) / 2``:
1 while bit k is not yet flipped beyond ``tau`` past zero, 0 once it is, and
0.5 on an exact tie. The first term multiplies by the continuous clean
output ``h``, not its sign. The second term (bit balance) has weight
``beta``. Defaults: tau 0.5, beta 1.

Optimiser: ``torch.optim.SGD`` directly on the image (start at ``x`` unless
``random_start=True``), lr 100, momentum 0.9, 2000 steps, SAAT tanh-scale schedule,
then the eps clamp (8/255) and the [0, 1] clamp after every step. Each batch
gets a fresh optimiser.

Batch size: the SAAT code averages the loss over a batch of 128 and steps
with lr 100, so an image's step shrinks as 1/batch size (a smaller last batch
takes larger steps). Here the loss is the per-image sum divided by
``reference_batch`` (128), so every image takes the step it would take inside a
full SAAT batch, whatever the batch size. ``batch_scaled_lr=True`` restores
the plain batch mean of the SAAT code.

Codes: ``run`` returns only the final projected images, so evaluation
encodes the returned image itself. The SAAT code instead reported the sign
of the last forward pass, which comes before the last update, projection
and scale change. The theory codes are ``-sign(h)``, every bit of the
clean code flipped.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from attacks._base import ATTACKS, Attack, Capabilities
from models.base import HashingModel
from models.codes import binarize
from models.errors import ConfigError

# Batch size of the SAAT HAG runs. The default loss scaling reproduces their per-image step.
REFERENCE_BATCH = 128


def hag_bit_mask(outputs: Tensor, clean_outputs: Tensor, tau: float = 0.5) -> Tensor:
    """Return HAG's bit mask: 1 for bits not yet flipped beyond ``tau``, 0 for flipped ones, 0.5 on a tie.

    The mask is piecewise constant, so it is detached.
    """
    distance = (outputs.detach() - torch.sign(clean_outputs)).abs()
    return (torch.sign((1 + tau) - distance) + 1) / 2


def hag_loss(outputs: Tensor, clean_outputs: Tensor, *, tau: float = 0.5, beta: float = 1.0) -> Tensor:
    """Return the per-image HAG loss, shape (n,). The SAAT loss is its mean over the batch."""
    clean_outputs = clean_outputs.detach()
    mask = hag_bit_mask(outputs, clean_outputs, tau)
    agreement = (mask * outputs * clean_outputs).sum(dim=1) / (mask.sum(dim=1) + 1e-8)
    balance = outputs.mean(dim=1) ** 2
    return (agreement + 1) ** 2 + beta * balance


@ATTACKS.register("hag")
class HAG(Attack):
    """HAG: SGD with momentum on the pixels, away from the query's clean output."""

    name = "hag"
    capabilities = Capabilities(targeted=False, label_aware=False, needs_gradients=True, bounded=True)

    def __init__(
        self,
        *,
        lr: float = 100.0,
        momentum: float = 0.9,
        tau: float = 0.5,
        beta: float = 1.0,
        batch_scaled_lr: bool = False,
        reference_batch: int = REFERENCE_BATCH,
        steps: int = 2000,
        random_start: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(steps=steps, random_start=random_start, **kwargs)
        if lr <= 0 or not 0 <= momentum < 1:
            raise ConfigError(f"lr ({lr}) must be positive and momentum ({momentum}) in [0, 1)")
        if reference_batch < 1:
            raise ConfigError(f"reference_batch must be a positive batch size, got {reference_batch}")
        self.lr = float(lr)
        self.momentum = float(momentum)
        self.tau = float(tau)
        self.beta = float(beta)
        self.batch_scaled_lr = bool(batch_scaled_lr)
        self.reference_batch = int(reference_batch)

    def method_config(self) -> dict[str, Any]:
        return {
            "lr": self.lr,
            "momentum": self.momentum,
            "tau": self.tau,
            "beta": self.beta,
            "batch_scaled_lr": self.batch_scaled_lr,
            "reference_batch": self.reference_batch,
        }

    def reduce_loss(self, per_image: Tensor) -> Tensor:
        """Return the scalar that SGD minimises: the batch mean (SAAT) or the sum over ``reference_batch``."""
        if self.batch_scaled_lr:
            return per_image.mean()
        return per_image.sum() / self.reference_batch

    def _perturb(self, model: HashingModel, images: Tensor, labels: Tensor, target_labels: Tensor | None,
                 generator: torch.Generator) -> Tensor:
        with torch.no_grad():
            clean = model(images)
        start = images + self.random_delta(images, generator) if self.random_start else images
        adversarial = start.clone().requires_grad_(True)
        optimizer = torch.optim.SGD([adversarial], lr=self.lr, momentum=self.momentum)
        for step in range(self.steps):
            outputs = model(adversarial, self.scale(step))
            loss = self.reduce_loss(hag_loss(outputs, clean, tau=self.tau, beta=self.beta))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                adversarial.copy_(self.project(images, adversarial))
        return adversarial.detach()

    def _theory_codes(self, model: HashingModel, images: Tensor, labels: Tensor,
                      target_labels: Tensor | None) -> Tensor:
        with torch.no_grad():
            return -binarize(model(images))
