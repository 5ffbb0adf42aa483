"""THA: the PrototypeNet-guided targeted attack (Wang et al., SIGIR 2021).

Preparation trains a PrototypeNet once per victim with the circle loss
against the victim's binary training codes, drawing target labels from the
distinct non-zero database label vectors (``attacks._prototype``). The
target code is ``t = sign(p(l_t))`` of the target label, and the attack
minimises ``-mean(F(x + delta) * t)`` by sign-PGD. Defaults: eps 8/255,
step 1/255, 100 steps, no random start and the SAAT tanh-scale schedule.
``scale_schedule="none"`` keeps scale 1 throughout, as the TADH code does.

Reference training: 30,000 steps of 128 labels in SAAT (32 in TADH),
softplus on the circle loss in SAAT (off in TADH). Lower
``prototype_steps`` and the hidden sizes for quick CPU runs.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from attacks._base import ATTACKS, Attack, Capabilities, VictimKnowledge, _model_device
from attacks._prototype import PrototypeNet, seeded_init, train_prototype_net
from attacks._targets import target_candidates
from models.base import HashingModel
from models.codes import binarize
from models.errors import ConfigError, DataError

PROTOTYPE_PREFIX = "prototype."


@ATTACKS.register("tha")
class THA(Attack):
    """Targeted sign-PGD towards the PrototypeNet code of the target label."""

    name = "tha"
    capabilities = Capabilities(targeted=True, needs_train_codes=True, needs_database_codes=True)

    def __init__(
        self,
        *,
        prototype_steps: int = 30_000,
        prototype_batch_size: int = 128,
        prototype_lr: float = 1e-4,
        hidden_size: int = 4096,
        feature_size: int = 512,
        softplus: bool = True,
        triu_parity: bool = False,
        steps: int = 100,
        random_start: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(steps=steps, random_start=random_start, **kwargs)
        if prototype_steps < 1 or prototype_batch_size < 1:
            raise ConfigError(
                f"prototype_steps ({prototype_steps}) and prototype_batch_size ({prototype_batch_size}) "
                "must be positive"
            )
        if prototype_lr <= 0:
            raise ConfigError(f"prototype_lr must be positive, got {prototype_lr}")
        self.prototype_steps = int(prototype_steps)
        self.prototype_batch_size = int(prototype_batch_size)
        self.prototype_lr = float(prototype_lr)
        self.hidden_size = int(hidden_size)
        self.feature_size = int(feature_size)
        self.softplus = bool(softplus)
        self.triu_parity = bool(triu_parity)
        self.prototype_net: PrototypeNet | None = None

    # -- configuration -------------------------------------------------------
    def _training_config(self) -> dict[str, Any]:
        return {
            "prototype_steps": self.prototype_steps,
            "prototype_batch_size": self.prototype_batch_size,
            "prototype_lr": self.prototype_lr,
            "hidden_size": self.hidden_size,
            "feature_size": self.feature_size,
            "softplus": self.softplus,
            "triu_parity": self.triu_parity,
        }

    def method_config(self) -> dict[str, Any]:
        return self._training_config()

    def fit_config(self) -> dict[str, Any]:
        return {"attack": self.name, "version": self.version, "seed": self.seed, **self._training_config()}

    # -- per-victim preparation ----------------------------------------------
    def _fit(self, model: HashingModel, knowledge: VictimKnowledge) -> None:
        device = _model_device(model)
        codes = knowledge.train_codes.to(device, torch.float32)
        labels = knowledge.train_labels.to(device, torch.float32)
        candidates = target_candidates(knowledge.database_labels).to(device, torch.float32)
        with seeded_init(self.seed):
            net = PrototypeNet(labels.shape[1], codes.shape[1], hidden_size=self.hidden_size,
                               feature_size=self.feature_size)
        net.to(device)
        train_prototype_net(
            net, codes, labels, candidates,
            steps=self.prototype_steps,
            batch_size=self.prototype_batch_size,
            lr=self.prototype_lr,
            loss="circle",
            softplus=self.softplus,
            triu_parity=self.triu_parity,
            generator=torch.Generator().manual_seed(self.seed),
        )
        self.prototype_net = net.eval().requires_grad_(False)

    def prepared_state(self) -> dict[str, Tensor]:
        if self.prototype_net is None:
            return {}
        return {PROTOTYPE_PREFIX + key: value.detach().cpu().clone()
                for key, value in self.prototype_net.state_dict().items()}

    def load_prepared_state(self, state: dict[str, Tensor]) -> None:
        weights = {key[len(PROTOTYPE_PREFIX):]: value for key, value in state.items()
                   if key.startswith(PROTOTYPE_PREFIX)}
        if not weights:
            raise DataError("THA prepared state has no PrototypeNet weights; refit the attack instead")
        net = PrototypeNet.from_state_dict(weights)
        if (net.hidden_size, net.feature_size) != (self.hidden_size, self.feature_size):
            raise ConfigError(
                f"cached PrototypeNet has hidden sizes {net.hidden_size}/{net.feature_size} but this attack "
                f"is configured for {self.hidden_size}/{self.feature_size}"
            )
        self.prototype_net = net.eval().requires_grad_(False)
        self._fitted = True

    # -- the attack --------------------------------------------------------
    @torch.no_grad()
    def target_codes(self, target_labels: Tensor) -> Tensor:
        """Return the binary prototype codes ``sign(p(l_t))`` of the target labels."""
        if self.prototype_net is None:
            raise ConfigError("THA has no PrototypeNet; call fit() or load_prepared_state() first")
        net = self.prototype_net.to(target_labels.device)
        if target_labels.shape[1] != net.n_classes:
            raise DataError(
                f"target labels have {target_labels.shape[1]} classes but the PrototypeNet was trained "
                f"for {net.n_classes}"
            )
        return binarize(net(target_labels).prototypes)

    def _perturb(self, model: HashingModel, images: Tensor, labels: Tensor, target_labels: Tensor | None,
                 generator: torch.Generator) -> Tensor:
        codes = self.target_codes(target_labels)
        if codes.shape[1] != model.n_bits:
            raise DataError(
                f"the PrototypeNet produces {codes.shape[1]}-bit codes but the victim has {model.n_bits} bits; "
                "fit the attack on this victim"
            )
        return self.sign_pgd(model, images, lambda outputs: -(outputs * codes).mean(), generator)

    def _theory_codes(self, model: HashingModel, images: Tensor, labels: Tensor,
                      target_labels: Tensor | None) -> Tensor:
        return self.target_codes(target_labels)
