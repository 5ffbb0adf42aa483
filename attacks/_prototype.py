"""PrototypeNet: a label-to-code network shared by THA, ProS-GAN and ATRDH.

A label vector ``l`` (C classes) passes through Linear(C, hidden) -> ReLU ->
Linear(hidden, feature_size), the semantic feature ``f`` (no activation).
The prototype code is ``p = tanh(Linear(feature_size, K))``, and ProS-GAN
adds a classifier head ``sigmoid(Linear(feature_size, C))`` that
reconstructs the label. The reference sizes are hidden 4096 and feature 512.

The network learns from a bank of the victim's binary codes ``B`` and their
labels ``Y``. Two losses are implemented:

* ``circle_prototype_loss``, the modified circle loss of THA and ATRDH
  (Wang et al., SIGIR 2021; SAAT re-implementation);
* ``prosgan_prototype_loss``, the pairwise likelihood loss of ProS-GAN
  (Wang et al., CVPR 2021).

Both add the quantisation penalty ``sum ||sign(p) - p||^2 / (1e4 n)`` for a
batch of ``n`` labels. ``PrototypeTrainer`` takes one optimiser step at a
time, so a defense can interleave it with victim updates.
``train_prototype_net`` runs the attacks' fixed schedule: Adam(1e-4,
betas (0.5, 0.999)) with the learning rate multiplied by 0.1 after 50 % and
75 % of the steps. The reference runs 30,000 steps (100 epochs of 300 steps).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator, Sequence
from typing import Any, Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.errors import ConfigError, DataError, TrainingDivergedError

log = logging.getLogger(__name__)

PrototypeLossName = Literal["circle", "prosgan"]
PROTOTYPE_LOSSES = ("circle", "prosgan")
QUANTIZATION_DIVISOR = 1e4


@contextlib.contextmanager
def seeded_init(seed: int) -> Iterator[None]:
    """Run the body with the CPU RNG seeded to ``seed``, restoring its state on exit.

    Parameter initialisation inside the body is reproducible on the same CPU
    and leaves the caller's global random state untouched.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


class PrototypeOutput(NamedTuple):
    """Semantic features ``f``, prototype codes ``p`` in (-1, 1) and, with the classifier head, label scores."""

    features: Tensor
    prototypes: Tensor
    label_scores: Tensor | None


class PrototypeNet(nn.Module):
    """Label -> semantic feature -> prototype code (and optionally label scores)."""

    def __init__(
        self,
        n_classes: int,
        n_bits: int,
        *,
        hidden_size: int = 4096,
        feature_size: int = 512,
        classifier: bool = False,
    ) -> None:
        super().__init__()
        for name, value in (("n_classes", n_classes), ("n_bits", n_bits), ("hidden_size", hidden_size),
                            ("feature_size", feature_size)):
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"PrototypeNet {name} must be a positive integer, got {value!r}")
        self.n_classes = n_classes
        self.n_bits = n_bits
        self.hidden_size = hidden_size
        self.feature_size = feature_size
        self.feature = nn.Sequential(
            nn.Linear(n_classes, hidden_size),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_size, feature_size),
        )
        self.hash = nn.Linear(feature_size, n_bits)
        self.classifier = nn.Linear(feature_size, n_classes) if classifier else None

    def forward(self, labels: Tensor) -> PrototypeOutput:
        features = self.feature(labels.to(self.hash.weight.dtype))
        prototypes = torch.tanh(self.hash(features))
        scores = torch.sigmoid(self.classifier(features)) if self.classifier is not None else None
        return PrototypeOutput(features, prototypes, scores)

    def config(self) -> dict[str, Any]:
        """Return the constructor arguments (JSON-safe)."""
        return {
            "n_classes": self.n_classes,
            "n_bits": self.n_bits,
            "hidden_size": self.hidden_size,
            "feature_size": self.feature_size,
            "classifier": self.classifier is not None,
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Tensor]) -> PrototypeNet:
        """Build a network whose sizes match ``state`` and load it."""
        try:
            hidden_size, n_classes = state["feature.0.weight"].shape
            feature_size = state["feature.2.weight"].shape[0]
            n_bits = state["hash.weight"].shape[0]
        except KeyError as missing:
            raise DataError(f"PrototypeNet state is missing {missing}; was it saved by PrototypeNet.state_dict()?") from None
        net = cls(int(n_classes), int(n_bits), hidden_size=int(hidden_size), feature_size=int(feature_size),
                  classifier="classifier.weight" in state)
        net.load_state_dict(state)
        return net


# -- losses ------------------------------------------------------------------
def quantization_penalty(prototypes: Tensor) -> Tensor:
    """Return ``sum ||sign(p) - p||^2 / (1e4 n)`` over a batch of ``n`` prototypes."""
    return ((torch.sign(prototypes) - prototypes) ** 2).sum() / (QUANTIZATION_DIVISOR * prototypes.shape[0])


def _label_overlap(target_labels: Tensor, bank_codes: Tensor, bank_labels: Tensor, n_bits: int) -> Tensor:
    if bank_codes.shape[0] != bank_labels.shape[0]:
        raise DataError(f"code bank has {bank_codes.shape[0]} rows but {bank_labels.shape[0]} label rows")
    if bank_codes.shape[1] != n_bits:
        raise DataError(f"bank codes have {bank_codes.shape[1]} bits but the prototypes have {n_bits}")
    if target_labels.shape[1] != bank_labels.shape[1]:
        raise DataError(
            f"target labels have {target_labels.shape[1]} classes but the bank's labels have {bank_labels.shape[1]}"
        )
    return target_labels.to(bank_codes.dtype) @ bank_labels.to(bank_codes.dtype).T > 0


def _masked_logsumexp(logits: Tensor, mask: Tensor) -> Tensor:
    return torch.logsumexp(logits.masked_fill(~mask, -math.inf).flatten(), dim=0)


def circle_prototype_loss(
    prototypes: Tensor,
    target_labels: Tensor,
    bank_codes: Tensor,
    bank_labels: Tensor,
    *,
    softplus: bool = True,
    triu_parity: bool = False,
    gamma: float = 1.0,
) -> Tensor:
    """Return the THA prototype loss for ``n`` prototypes against an (N, K) code bank.

    With ``s_ij = <p_i, B_j> / K``, positives are the pairs whose labels share
    a class and negatives the rest. The weights ``a_p = max(0, 2 - s_p)`` and
    ``a_n = max(0, s_n + 2)`` carry no gradient, and
    ``L_circle = log sum_neg exp(gamma a_n s_n) + log sum_pos exp(-gamma a_p s_p)``
    sums over every pair of the batch. The result is
    ``softplus(L_circle) / n`` (SAAT) or ``L_circle / n`` (``softplus=False``,
    TADH and CgAT), plus the quantisation penalty.

    ``triu_parity=True`` keeps only pairs with ``j > i``, as the reference
    code does by applying ``triu(diagonal=1)`` to the non-square n x N matrix.
    A side without pairs would add the log of an empty sum (-inf), so its
    term is left out. With neither side present ``L_circle`` is 0.
    """
    n, n_bits = prototypes.shape
    positive = _label_overlap(target_labels, bank_codes, bank_labels, n_bits)
    similarity = prototypes @ bank_codes.to(prototypes.dtype).T / n_bits
    negative = ~positive
    if triu_parity:
        upper_triangle = torch.ones_like(positive).triu(diagonal=1)
        positive, negative = positive & upper_triangle, negative & upper_triangle

    # Masked log-sum-exp over the full matrix: cheaper than gathering the pairs
    # when the bank is large, and the masked entries get zero gradient.
    circle = similarity.sum() * 0  # keeps the graph when both sides are empty
    if bool(negative.any()):
        weight = (similarity.detach() + 2).clamp(min=0)
        circle = circle + _masked_logsumexp(gamma * weight * similarity, negative)
    if bool(positive.any()):
        weight = (2 - similarity.detach()).clamp(min=0)
        circle = circle + _masked_logsumexp(-gamma * weight * similarity, positive)
    if softplus:
        circle = F.softplus(circle)
    return circle / n + quantization_penalty(prototypes)


def prosgan_prototype_loss(
    prototypes: Tensor,
    label_scores: Tensor,
    target_labels: Tensor,
    bank_codes: Tensor,
    bank_labels: Tensor,
) -> Tensor:
    """Return the ProS-GAN prototype loss for ``n`` prototypes against an (N, K) code bank.

    With ``theta_ij = <p_i, B_j> / 2`` and ``S_ij = [l_i . Y_j > 0]`` the loss is
    ``-(1 / (N n)) sum_ij (S_ij theta_ij - softplus(theta_ij))``, the negative
    log-likelihood of the pairwise similarities, plus ``MSE(label_scores, l)``
    and the quantisation penalty.
    """
    similar = _label_overlap(target_labels, bank_codes, bank_labels, prototypes.shape[1]).to(prototypes.dtype)
    theta = prototypes @ bank_codes.to(prototypes.dtype).T / 2
    likelihood = (F.softplus(theta) - similar * theta).mean()
    reconstruction = F.mse_loss(label_scores, target_labels.to(label_scores.dtype))
    return likelihood + reconstruction + quantization_penalty(prototypes)


def prototype_loss(
    output: PrototypeOutput,
    target_labels: Tensor,
    bank_codes: Tensor,
    bank_labels: Tensor,
    *,
    loss: PrototypeLossName = "circle",
    softplus: bool = True,
    triu_parity: bool = False,
) -> Tensor:
    """Return the named prototype loss of a ``PrototypeNet`` forward pass."""
    if loss == "circle":
        return circle_prototype_loss(
            output.prototypes, target_labels, bank_codes, bank_labels, softplus=softplus, triu_parity=triu_parity
        )
    if loss == "prosgan":
        if output.label_scores is None:
            raise ConfigError("the prosgan prototype loss needs a PrototypeNet built with classifier=True")
        return prosgan_prototype_loss(output.prototypes, output.label_scores, target_labels, bank_codes, bank_labels)
    raise ConfigError(f"unknown prototype loss {loss!r}; valid: {', '.join(PROTOTYPE_LOSSES)}")


# -- training ----------------------------------------------------------------
class PrototypeStep(NamedTuple):
    """Loss value of one training step and the prototypes of its forward pass (before the update)."""

    loss: float
    prototypes: Tensor


class PrototypeTrainer:
    """Adam and a step learning-rate schedule for a PrototypeNet, advanced one step per call.

    The learning rate is multiplied by ``gamma`` once ``fraction * total_steps``
    steps have been taken, for each fraction in ``milestones``.
    """

    def __init__(
        self,
        net: PrototypeNet,
        *,
        total_steps: int,
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.5, 0.999),
        milestones: Sequence[float] = (0.5, 0.75),
        gamma: float = 0.1,
        loss: PrototypeLossName = "circle",
        softplus: bool = True,
        triu_parity: bool = False,
    ) -> None:
        if loss not in PROTOTYPE_LOSSES:
            raise ConfigError(f"unknown prototype loss {loss!r}; valid: {', '.join(PROTOTYPE_LOSSES)}")
        if loss == "prosgan" and net.classifier is None:
            raise ConfigError("the prosgan prototype loss needs a PrototypeNet built with classifier=True")
        if total_steps < 1:
            raise ConfigError(f"total_steps must be at least 1, got {total_steps}")
        if any(not 0 < fraction <= 1 for fraction in milestones):
            raise ConfigError(f"milestones are fractions of total_steps in (0, 1], got {list(milestones)}")
        self.net = net
        self.loss = loss
        self.softplus = softplus
        self.triu_parity = triu_parity
        self.optimizer = torch.optim.Adam(net.parameters(), lr=lr, betas=betas)
        steps_at = sorted(round(fraction * total_steps) for fraction in milestones)
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(self.optimizer, milestones=steps_at, gamma=gamma)

    def step(self, target_labels: Tensor, bank_codes: Tensor, bank_labels: Tensor) -> PrototypeStep:
        """Take one optimiser and scheduler step on a batch of target labels.

        Raises ``TrainingDivergedError`` when the loss is NaN or infinite.
        """
        self.net.train()
        output = self.net(target_labels)
        loss = prototype_loss(
            output, target_labels, bank_codes, bank_labels,
            loss=self.loss, softplus=self.softplus, triu_parity=self.triu_parity,
        )
        value = float(loss.detach())
        if not math.isfinite(value):
            raise TrainingDivergedError(f"PrototypeNet {self.loss} loss became {value}; lower the learning rate")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        return PrototypeStep(value, output.prototypes.detach())


def sample_target_labels(candidates: Tensor, count: int, generator: torch.Generator) -> Tensor:
    """Draw ``count`` rows of ``candidates`` uniformly with replacement (indices drawn on the CPU)."""
    if candidates.shape[0] == 0:
        raise DataError("there are no target-label candidates; the database needs a non-zero label vector")
    picks = torch.randint(0, candidates.shape[0], (count,), generator=generator)
    return candidates[picks.to(candidates.device)]


def train_prototype_net(
    net: PrototypeNet,
    train_codes: Tensor,
    train_labels: Tensor,
    candidates: Tensor,
    *,
    steps: int,
    batch_size: int,
    generator: torch.Generator,
    lr: float = 1e-4,
    betas: tuple[float, float] = (0.5, 0.999),
    milestones: Sequence[float] = (0.5, 0.75),
    gamma: float = 0.1,
    loss: PrototypeLossName = "circle",
    softplus: bool = True,
    triu_parity: bool = False,
) -> list[float]:
    """Train ``net`` for ``steps`` steps and return the loss of each step.

    Each step draws ``batch_size`` target labels uniformly with replacement
    from ``candidates`` (normally the distinct non-zero database labels) and
    compares their prototypes with the whole code bank. The bank tensors and
    candidates must be on the network's device. The network is left in eval
    mode.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    if candidates.shape[1] != net.n_classes:
        raise DataError(f"target-label candidates have {candidates.shape[1]} classes but the net has {net.n_classes}")
    trainer = PrototypeTrainer(
        net, total_steps=steps, lr=lr, betas=betas, milestones=milestones, gamma=gamma,
        loss=loss, softplus=softplus, triu_parity=triu_parity,
    )
    log.info("training PrototypeNet (%s loss): %d steps of %d labels against %d codes",
             loss, steps, batch_size, train_codes.shape[0])
    losses = []
    for _ in range(steps):
        targets = sample_target_labels(candidates, batch_size, generator)
        losses.append(trainer.step(targets, train_codes, train_labels).loss)
    net.eval()
    log.info("PrototypeNet trained: loss %.4g -> %.4g", losses[0], losses[-1])
    return losses
