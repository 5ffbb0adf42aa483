"""ATRDH: adversarial training of "Targeted Attack and Defense for Deep Hashing" (Wang et al., SIGIR 2021).

A PrototypeNet (label -> prototype code) is trained jointly with the victim.
Per mini-batch ``(x, y, I)``:

1. ``h = F(x)``; the binary bank row ``B[I]`` becomes ``sign(h)``.
2. Random target labels (uniform over the training set's distinct non-zero
   label vectors; a defense has only the training data) take one PrototypeNet
   step with the THA circle loss against ``B``; the targets are
   ``t = sign(p)`` from that step's forward pass.
3. ``x_adv`` by sign-PGD on ``-mean(F(x + delta) * t)`` (towards the random
   prototypes): eps 8/255, step 2/255, 7 steps, random start.
4. ``L = L_hash(h) + w * mean_ij (<F(x_adv)_i, U_j> / K - s_ij)**2`` with the
   DPH pairwise form against the bank of continuous benign outputs ``U``
   (``U[I] <- h``), ``s_ij = +1`` for pairs sharing a label and -1 otherwise.

Optimisers: Adam(1e-4, betas (0.5, 0.999)) for the victim and the
PrototypeNet, batch 32, 100 epochs, lr x0.1 at 50 % and 75 % of the
iterations (the TADH code). ``L_hash`` is the victim's own loss, as in the
SAAT re-implementation, so any model can be defended; TADH hard-codes DPH.
``adversarial_weight`` is 1 (TADH; the SAAT re-implementation uses 2).
``U`` starts from the victim's training codes, where TADH starts from zeros
so that the first epoch compares against unvisited zero rows.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from attacks import target_candidates
from attacks._prototype import PrototypeNet, PrototypeTrainer, sample_target_labels, seeded_init
from defenses._base import DEFENSES, Defense
from models.base import HashingModel, HashLoss
from models.codes import binarize
from models.imageset import ImageSet


@DEFENSES.register("atrdh")
class ATRDH(Defense):
    """Adversarial training towards random PrototypeNet targets."""

    name = "atrdh"
    default_epochs = 100
    default_lr = 1e-4

    def __init__(self, *, adversarial_weight: float = 1.0, hidden_size: int = 4096, feature_size: int = 512,
                 softplus: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.adversarial_weight = float(adversarial_weight)
        self.hidden_size = int(hidden_size)
        self.feature_size = int(feature_size)
        self.softplus = bool(softplus)

    def method_config(self) -> dict[str, Any]:
        return {"adversarial_weight": self.adversarial_weight, "hidden_size": self.hidden_size,
                "feature_size": self.feature_size, "softplus": self.softplus}

    def _setup(self, model: HashingModel, train_set: ImageSet, initial_codes: Tensor, device: torch.device) -> None:
        self.labels = train_set.labels.to(device)
        self.candidates = target_candidates(train_set.labels).to(device)
        self.loss_fn = model.make_loss(len(train_set)).to(device)
        if isinstance(self.loss_fn, HashLoss):
            self.loss_fn.preload(initial_codes, self.labels)
        self.bank = initial_codes.clone()
        self.benign_outputs = initial_codes.clone()
        with seeded_init(self.seed):
            self.prototype_net = PrototypeNet(self.labels.shape[1], model.n_bits, hidden_size=self.hidden_size,
                                              feature_size=self.feature_size).to(device)
        self.prototype_trainer = PrototypeTrainer(self.prototype_net, total_steps=self.total_iterations, lr=1e-4,
                                                  loss="circle", softplus=self.softplus)
        self.optimizer = torch.optim.Adam(model.parameters(), lr=self.lr, betas=(0.5, 0.999))
        self.scheduler = self.multistep_scheduler(self.optimizer)
        self.iteration = 0

    def _step(self, model: HashingModel, images: Tensor, labels: Tensor, indices: Tensor,
              generator: torch.Generator) -> dict[str, float]:
        scale = model.training_scale(self.iteration)
        benign_outputs = model(images, scale)
        self.bank[indices] = binarize(benign_outputs.detach())

        targets = sample_target_labels(self.candidates, images.shape[0], generator)
        prototype_step = self.prototype_trainer.step(targets, self.bank, self.labels)
        target_codes = binarize(prototype_step.prototypes)
        adversarial = self.inner_attack(model, images, lambda h: -(h * target_codes).mean(), generator)

        self.optimizer.zero_grad(set_to_none=True)
        adversarial_outputs = model(adversarial, scale)
        self.benign_outputs[indices] = benign_outputs.detach()
        hash_loss = self.loss_fn(benign_outputs, labels, indices)
        signed_similarity = (labels @ self.labels.T > 0).to(adversarial_outputs.dtype) * 2 - 1
        pairwise = adversarial_outputs @ self.benign_outputs.T / model.n_bits
        adversarial_term = ((pairwise - signed_similarity) ** 2).mean()
        loss = hash_loss + self.adversarial_weight * adversarial_term
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        self.iteration += 1
        return {"loss": loss.item(), "hash_loss": hash_loss.item(), "adversarial": adversarial_term.item(),
                "prototype_loss": prototype_step.loss}

    def _state(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "bank": self.bank.clone(), "benign_outputs": self.benign_outputs.clone(),
                "loss": self.loss_fn.state_dict(), "iteration": self.iteration,
                "prototype_net": self.prototype_net.state_dict(),
                "prototype_optimizer": self.prototype_trainer.optimizer.state_dict(),
                "prototype_scheduler": self.prototype_trainer.scheduler.state_dict()}

    def _load_state(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.bank.copy_(state["bank"])
        self.benign_outputs.copy_(state["benign_outputs"])
        self.loss_fn.load_state_dict(state["loss"])
        self.iteration = int(state["iteration"])
        self.prototype_net.load_state_dict(state["prototype_net"])
        self.prototype_trainer.optimizer.load_state_dict(state["prototype_optimizer"])
        self.prototype_trainer.scheduler.load_state_dict(state["prototype_scheduler"])
