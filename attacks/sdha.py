"""SDHA ("A Smart Adversarial Attack on Deep Hashing Based Image Retrieval"), as in the SAAT code.

Each query has a reference set of the victim's binary training codes: those
that share a label with the query's true label (non-targeted) or with its
target label (targeted). With ``q = model(x_adv, scale)`` and a reference
code ``r``, the attack minimises

    L = MSE(x_adv, x) + (hash_weight / K) * S

where the MSE is the mean over all pixels of the batch, hash_weight is 25,
K is the code length and S is a weighted mean of a soft distance ``dis(q, r)`` over each
reference set, averaged over the batch:

* non-targeted (sigma 5, z 0.5):
  ``dis = 1/2 sum_k |q_k - r_k| s(sigma q_k r_k) + sum_k (1 - s(sigma q_k r_k))``
  and ``S = -mean_i mean_r [w dis]``, so the attack moves away from codes of its own classes.
* targeted (sigma 10, z -0.3):
  ``dis = 1/2 sum_k |q_k - r_k| s(-sigma q_k r_k)`` and ``S = +mean_i mean_r [w dis]``,

with ``s`` the logistic sigmoid and the weight ``w = (d_H(sign q, r) + 1e-8) ** -z``.
The parameter z enters the loss only as this exponent. It gives ``d_H ** -0.5``
(non-targeted, nearby codes weigh more) and ``d_H ** 0.3`` (targeted,
distant codes weigh more). ``w`` is piecewise constant and carries no gradient.

Empty reference sets. Non-targeted: the query's own clean code
``sign(model(x))`` becomes its only reference, as in the SAAT code.
Targeted: the SAAT code takes the mean of an empty set (NaN). Here the
query's hash term is 0 instead, so only the MSE term acts, and an image
that starts at ``x`` stays there. S still divides by the full batch size,
so every other query weighs the same as in a batch without empty sets. A
warning reports the count.

Optimiser: ``torch.optim.Adam`` directly on the image (start at ``x``
unless ``random_start=True``), lr 0.01, betas (0.9, 0.999), 1500 steps, SAAT
tanh-scale schedule, then the eps clamp (8/255) and the [0, 1] clamp after every step.
Each batch gets a fresh optimiser. Both loss terms are batch means, but Adam
normalises the gradient scale away, so the step barely depends on the batch
size (only through Adam's epsilon).

Codes: ``run`` returns only the final projected images, and evaluation
encodes them, unlike the SAAT code, which reported the sign of the last
forward pass before the last update. SDHA has no theory codes: the SAAT code
computes ``-sign(mean R)`` and ``sign(mean R)`` but never evaluates them.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from attacks._base import ATTACKS, Attack, Capabilities, VictimKnowledge
from models.base import HashingModel
from models.codes import binarize, check_codes
from models.errors import ConfigError, DataError

log = logging.getLogger(__name__)


def reference_sets(
    query_labels: Tensor, train_codes: Tensor, train_labels: Tensor, fallback_codes: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Return reference codes (m, K) and the boolean (queries, m) mask of each query's reference set.

    A query's set is the training codes whose labels share a class with its
    row of ``query_labels``. With ``fallback_codes`` (queries, K), these rows
    are appended to the codes and a query whose set is empty gets its own
    fallback row as the only member.
    """
    if query_labels.shape[1] != train_labels.shape[1]:
        raise DataError(
            f"query labels have {query_labels.shape[1]} classes but the training labels "
            f"{train_labels.shape[1]}. Use labels of the victim's dataset."
        )
    shares_label = (query_labels.to(torch.float32) @ train_labels.to(torch.float32).T) > 0
    if fallback_codes is None:
        return train_codes, shares_label
    empty = ~shares_label.any(dim=1)
    codes = torch.cat([train_codes, fallback_codes.to(train_codes.dtype)])
    mask = torch.cat([shares_label, torch.diag(empty)], dim=1)
    return codes, mask


def _bit_terms(outputs: Tensor, code_bit: float, *, sigma: float, targeted: bool) -> Tensor:
    """Return the per-bit summands of ``dis`` for a reference bit equal to ``code_bit`` (+1 or -1)."""
    if targeted:
        gate = torch.sigmoid(-sigma * outputs * code_bit)
        return 0.5 * (outputs - code_bit).abs() * gate
    gate = torch.sigmoid(sigma * outputs * code_bit)
    return 0.5 * (outputs - code_bit).abs() * gate + (1 - gate)


def sdha_distances(outputs: Tensor, codes: Tensor, *, sigma: float, targeted: bool) -> Tensor:
    """Return the (queries, codes) matrix of SDHA's soft distance ``dis(q, r)``.

    ``codes`` must be -1/+1. Each summand of ``dis`` depends on ``r_k`` only
    through its sign, so ``dis(q, r) = sum_k [(1 + r_k) / 2 * a_k + (1 - r_k) / 2 * b_k]``
    with ``a``, ``b`` the summands for ``r_k = +1`` and ``-1``. That is one
    matrix product, and no (queries, codes, bits) tensor is built.
    """
    codes = codes.to(outputs.dtype)
    plus = _bit_terms(outputs, 1.0, sigma=sigma, targeted=targeted)
    minus = _bit_terms(outputs, -1.0, sigma=sigma, targeted=targeted)
    return 0.5 * (plus + minus).sum(dim=1, keepdim=True) + 0.5 * (plus - minus) @ codes.T


def sdha_weights(outputs: Tensor, codes: Tensor, *, z: float) -> Tensor:
    """Return the detached (queries, codes) weights ``(d_H(sign q, r) + 1e-8) ** -z``, with sign(0) = +1."""
    with torch.no_grad():
        n_bits = outputs.shape[1]
        hamming = (n_bits - binarize(outputs) @ codes.to(torch.float32).T) / 2
        return ((hamming + 1e-8) ** -z).to(outputs.dtype)


def sdha_hash_term(
    outputs: Tensor, codes: Tensor, mask: Tensor, *, sigma: float, z: float, targeted: bool
) -> Tensor:
    """Return S: the batch mean of each query's weighted mean ``dis`` over its reference set.

    The sign is + for the targeted and - for the non-targeted attack. A query
    with an empty set contributes 0, and the mean still divides by the batch size.
    """
    mask = mask.to(outputs.dtype)
    weighted = sdha_weights(outputs, codes, z=z) * sdha_distances(outputs, codes, sigma=sigma, targeted=targeted)
    per_query = (weighted * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
    value = per_query.mean()
    return value if targeted else -value


@ATTACKS.register("sdha")
class SDHA(Attack):
    """Non-targeted SDHA: Adam on the pixels, away from training codes of the query's own classes."""

    name = "sdha"
    capabilities = Capabilities(targeted=False, label_aware=True, needs_train_codes=True)
    default_sigma = 5.0
    default_z = 0.5

    def __init__(
        self,
        *,
        sigma: float | None = None,
        z: float | None = None,
        hash_weight: float = 25.0,
        lr: float = 0.01,
        betas: tuple[float, float] = (0.9, 0.999),
        steps: int = 1500,
        random_start: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(steps=steps, random_start=random_start, **kwargs)
        self.sigma = float(self.default_sigma if sigma is None else sigma)
        self.z = float(self.default_z if z is None else z)
        if lr <= 0 or hash_weight < 0:
            raise ConfigError(f"lr ({lr}) must be positive and hash_weight ({hash_weight}) non-negative")
        if len(betas) != 2 or not all(0 <= beta < 1 for beta in betas):
            raise ConfigError(f"betas must be two values in [0, 1), got {betas}")
        self.hash_weight = float(hash_weight)
        self.lr = float(lr)
        self.betas = (float(betas[0]), float(betas[1]))

    def method_config(self) -> dict[str, Any]:
        return {
            "sigma": self.sigma,
            "z": self.z,
            "hash_weight": self.hash_weight,
            "lr": self.lr,
            "betas": list(self.betas),
        }

    def _fit(self, model: HashingModel, knowledge: VictimKnowledge) -> None:
        check_codes(knowledge.train_codes, name="train_codes", n_bits=model.n_bits)
        if knowledge.train_labels.shape[0] != knowledge.train_codes.shape[0]:
            raise DataError(
                f"train_codes have {knowledge.train_codes.shape[0]} rows but train_labels "
                f"{knowledge.train_labels.shape[0]}. Encode the same training set for both."
            )

    def _perturb(self, model: HashingModel, images: Tensor, labels: Tensor, target_labels: Tensor | None,
                 generator: torch.Generator) -> Tensor:
        targeted = self.capabilities.targeted
        train_codes = self.knowledge.train_codes.to(images.device)
        train_labels = self.knowledge.train_labels.to(images.device)
        with torch.no_grad():
            own_codes = None if targeted else binarize(model(images))
        codes, mask = reference_sets(target_labels if targeted else labels, train_codes, train_labels, own_codes)
        empty = int((~mask.any(dim=1)).sum())
        if empty:
            log.warning(
                "%s: %d of %d queries in this batch share no class with any training code, "
                "so their hash term is 0 and only the MSE term moves them", self.name, empty, len(images),
            )

        hash_weight = self.hash_weight / model.n_bits
        start = images + self.random_delta(images, generator) if self.random_start else images
        adversarial = start.clone().requires_grad_(True)
        optimizer = torch.optim.Adam([adversarial], lr=self.lr, betas=self.betas)
        for step in range(self.steps):
            outputs = model(adversarial, self.scale(step))
            hash_term = sdha_hash_term(outputs, codes, mask, sigma=self.sigma, z=self.z, targeted=targeted)
            loss = F.mse_loss(adversarial, images) + hash_weight * hash_term
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                adversarial.copy_(self.project(images, adversarial))
        return adversarial.detach()


@ATTACKS.register("sdha-targeted")
class TargetedSDHA(SDHA):
    """Targeted SDHA: Adam on the pixels, towards training codes of the target classes."""

    name = "sdha-targeted"
    capabilities = Capabilities(targeted=True, needs_train_codes=True)
    default_sigma = 10.0
    default_z = -0.3
