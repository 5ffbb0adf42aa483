"""The adversarial-training base class shared by SAAT, ATRDH and CgAT.

A defense fine-tunes a trained victim on its training set with adversarial
examples made on the fly by a short L-infinity sign-PGD (eps 8/255, step
2/255, 7 steps, random start). The inner attack takes input gradients only
(``torch.autograd.grad``), so the victim's parameters never receive
gradients from it. Whether the victim is in train mode during the inner
attack is the ``inner_mode`` option: ``"train"`` (dropout active, BatchNorm
statistics updated, as in the SAAT, TADH and CgAT code) or ``"eval"``.

Progress goes to a callback that receives the epoch log and a function that
returns the full training state, so the caller can save a resumable
checkpoint after every epoch. Nothing here touches files.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import Tensor

from models._registry import Registry
from models.base import HashingModel
from models.errors import ConfigError, TrainingDivergedError
from models.imageset import ImageSet, iterate_batches
from models.training import encode_images

log = logging.getLogger(__name__)

DEFENSES: Registry = Registry("defense")

EpochCallback = Callable[[int, dict[str, Any], Callable[[], dict[str, Any]]], None]
INNER_MODES = ("train", "eval")


class Defense:
    """Adversarial fine-tuning of a hashing model; subclasses write ``_setup`` and ``_step``."""

    name: ClassVar[str] = "defense"
    version: ClassVar[int] = 1
    # The reference optimiser settings of each defense.
    default_epochs: ClassVar[int] = 20
    default_lr: ClassVar[float] = 0.05

    def __init__(
        self,
        *,
        epochs: int | None = None,
        batch_size: int = 32,
        lr: float | None = None,
        eps: float = 8 / 255,
        alpha: float = 2 / 255,
        steps: int = 7,
        random_start: bool = True,
        inner_mode: str = "train",
        seed: int = 0,
    ) -> None:
        self.epochs = int(epochs if epochs is not None else self.default_epochs)
        self.lr = float(lr if lr is not None else self.default_lr)
        if self.epochs < 1 or batch_size < 1 or self.lr <= 0:
            raise ConfigError(
                f"epochs ({self.epochs}) and batch_size ({batch_size}) must be positive and lr ({self.lr}) above 0"
            )
        if inner_mode not in INNER_MODES:
            raise ConfigError(f"unknown inner_mode {inner_mode!r}; valid: {', '.join(INNER_MODES)}")
        if not 0 <= eps <= 1 or alpha <= 0 or steps < 0:
            raise ConfigError(f"invalid inner attack: eps={eps} (pixel scale), alpha={alpha}, steps={steps}")
        self.batch_size = int(batch_size)
        self.eps = float(eps)
        self.alpha = float(alpha)
        self.steps = int(steps)
        self.random_start = bool(random_start)
        self.inner_mode = inner_mode
        self.seed = int(seed)

    # -- configuration -------------------------------------------------------
    def config(self) -> dict[str, Any]:
        return {
            "defense": self.name,
            "version": self.version,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "eps": self.eps,
            "alpha": self.alpha,
            "steps": self.steps,
            "random_start": self.random_start,
            "inner_mode": self.inner_mode,
            "seed": self.seed,
            **self.method_config(),
        }

    def method_config(self) -> dict[str, Any]:
        return {}

    # -- subclass hooks ------------------------------------------------------
    def _setup(self, model: HashingModel, train_set: ImageSet, initial_codes: Tensor, device: torch.device) -> None:
        """Build optimisers, banks and losses before the first epoch."""
        raise NotImplementedError

    def _step(self, model: HashingModel, images: Tensor, labels: Tensor, indices: Tensor,
              generator: torch.Generator) -> dict[str, float]:
        """Run one mini-batch of adversarial training; return named loss terms (``loss`` required)."""
        raise NotImplementedError

    def _state(self) -> dict[str, Any]:
        """Return the defense's own resumable state (optimisers, banks)."""
        return {}

    def _load_state(self, state: dict[str, Any]) -> None:
        """Restore what ``_state`` returned."""

    # -- the training loop ---------------------------------------------------
    def train(
        self,
        model: HashingModel,
        train_set: ImageSet,
        *,
        device: torch.device | str = "cpu",
        on_epoch: EpochCallback | None = None,
        resume: dict[str, Any] | None = None,
    ) -> HashingModel:
        """Fine-tune ``model`` in place and return it in eval mode.

        ``resume`` is a state that ``on_epoch``'s state function returned; the
        epochs already done are skipped and the schedule continues. Raises
        ``TrainingDivergedError`` on a NaN or infinite loss.
        """
        device = torch.device(device)
        model.to(device)
        initial_codes = encode_images(model, train_set, device=device).to(device)
        self.iterations_per_epoch = math.ceil(len(train_set) / self.batch_size)
        self.total_iterations = self.epochs * self.iterations_per_epoch
        generator = torch.Generator().manual_seed(self.seed)
        self._setup(model, train_set, initial_codes, device)
        start_epoch = 0
        if resume is not None:
            model.load_state_dict(resume["model"])
            model.load_training_state(resume.get("model_training_state", {}))
            self._load_state(resume["defense"])
            generator.set_state(resume["generator"])
            start_epoch = int(resume["epoch"])
        for epoch in range(start_epoch, self.epochs):
            started = time.perf_counter()
            model.train()
            totals: dict[str, float] = {}
            count = 0
            for batch, (images, labels, indices) in enumerate(
                iterate_batches(train_set, self.batch_size, shuffle=True, generator=generator, device=device)
            ):
                terms = self._step(model, images, labels, indices, generator)
                if not math.isfinite(terms["loss"]):
                    raise TrainingDivergedError(
                        f"{self.name} loss became {terms['loss']} at epoch {epoch + 1}, batch {batch + 1}; "
                        f"lower the learning rate (now {self.lr}); the last finished epoch's checkpoint is kept"
                    )
                for key, value in terms.items():
                    totals[key] = totals.get(key, 0.0) + value * len(indices)
                count += len(indices)
            model.eval()
            entry = {key: value / max(count, 1) for key, value in totals.items()}
            entry.update(epoch=epoch + 1, seconds=time.perf_counter() - started)
            log.info("%s epoch %d/%d: %s", self.name, epoch + 1, self.epochs,
                     ", ".join(f"{key} {value:.4g}" for key, value in entry.items() if key != "epoch"))
            if on_epoch is not None:
                completed = epoch + 1
                on_epoch(completed, entry, lambda: self._full_state(model, generator, completed))
        model.eval()
        return model

    def _full_state(self, model: HashingModel, generator: torch.Generator, epoch: int) -> dict[str, Any]:
        return {
            "epoch": epoch,
            "model": {key: value.detach().clone() for key, value in model.state_dict().items()},
            "model_training_state": model.training_state(),
            "defense": copy.deepcopy(self._state()),
            "generator": generator.get_state(),
        }

    # -- shared pieces -------------------------------------------------------
    def multistep_scheduler(self, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.MultiStepLR:
        """Return the schedule of all three reference defenses: x0.1 at 50 % and 75 % of the iterations."""
        milestones = [int(self.total_iterations * 0.5), int(self.total_iterations * 0.75)]
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=0.1)

    def inner_attack(
        self, model: HashingModel, images: Tensor, loss_fn: Callable[[Tensor], Tensor], generator: torch.Generator
    ) -> Tensor:
        """Minimise ``loss_fn(model(x + delta))`` by sign-PGD; return detached adversarial images.

        The tanh scale is fixed at 1 (no schedule), as in every reference defense.
        The model's train/eval mode follows ``inner_mode`` and is restored afterwards.
        """
        was_training = model.training
        model.train(self.inner_mode == "train")
        if self.random_start:
            noise = torch.rand(images.shape, generator=generator, dtype=images.dtype).to(images.device)
            delta = (images + (noise * 2 - 1) * self.eps).clamp(0, 1) - images
        else:
            delta = torch.zeros_like(images)
        for _ in range(self.steps):
            delta.requires_grad_(True)
            loss = loss_fn(model(images + delta))
            (gradient,) = torch.autograd.grad(loss, delta)
            with torch.no_grad():
                delta = (delta - self.alpha * gradient.sign()).clamp_(-self.eps, self.eps)
                delta = (images + delta).clamp_(0.0, 1.0) - images
        model.train(was_training)
        return (images + delta).detach()
