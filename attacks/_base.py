"""The attack base class: everything attacks share except their own steps.

``Attack.run`` checks inputs, puts the victim in eval mode with frozen
parameters (input gradients only), batches and seeds the work, projects onto
the L-infinity eps-ball and the [0, 1] image box, and restores the victim's
mode and ``requires_grad`` flags afterwards. A subclass writes ``_perturb``
(one batch) and, where it has one, ``_fit`` (per-victim preparation such as
training a PrototypeNet) and ``_theory_codes``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor

from attacks._schedule import scale_at
from models._registry import Registry
from models.base import HashingModel
from models.errors import ConfigError, DataError, UnsupportedPairingError
from models.imageset import ImageSet

log = logging.getLogger(__name__)

ATTACKS: Registry = Registry("attack")


@dataclass(frozen=True)
class Capabilities:
    """Attack properties that the harness reads to pair attacks with models."""

    targeted: bool
    label_aware: bool = False
    needs_gradients: bool = True
    needs_train_codes: bool = False
    needs_train_images: bool = False
    needs_database_codes: bool = False
    bounded: bool = True


@dataclass
class VictimKnowledge:
    """Victim data that an attacker may use besides the weights.

    Codes are binary (eval mode, scale 1) and indexed like their labels.
    ``train_images`` is needed only by attacks that train a generator.
    """

    train_codes: Tensor | None = None
    train_labels: Tensor | None = None
    database_codes: Tensor | None = None
    database_labels: Tensor | None = None
    train_images: ImageSet | None = None


@dataclass
class AttackOutput:
    """Adversarial images (CPU, [0, 1]) and the attack's ideal target codes.

    ``theory_codes`` are the codes the attack would produce if it reached its
    target exactly (mainstay, anchor or prototype codes, or the flipped
    benign code), or None. ``extra_images`` contains alternative outputs, such
    as ProS-GAN's unclipped images.
    """

    images: Tensor
    theory_codes: Tensor | None = None
    extra_images: dict[str, Tensor] = field(default_factory=dict)


class Attack:
    """Base class of every attack; eps and alpha are on the [0, 1] pixel scale."""

    name: ClassVar[str] = "attack"
    capabilities: ClassVar[Capabilities] = Capabilities(targeted=False)
    # Bump when a change alters the attack's output; it is part of every cache key.
    version: ClassVar[int] = 1

    def __init__(
        self,
        *,
        eps: float = 8 / 255,
        alpha: float = 1 / 255,
        steps: int = 100,
        random_start: bool = True,
        scale_schedule: str = "saat",
        batch_size: int = 128,
        seed: int = 0,
    ) -> None:
        if not 0 <= eps <= 1:
            raise ConfigError(f"eps must lie in [0, 1] (pixel scale; 8/255 = {8 / 255:.5f}), got {eps}")
        if alpha <= 0 or steps < 0 or batch_size < 1:
            raise ConfigError(
                f"alpha ({alpha}) must be positive, steps ({steps}) non-negative and batch_size ({batch_size}) positive"
            )
        scale_at(0, max(steps, 1), scale_schedule)
        self.eps = float(eps)
        self.alpha = float(alpha)
        self.steps = int(steps)
        self.random_start = bool(random_start)
        self.scale_schedule = scale_schedule
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.knowledge = VictimKnowledge()
        self._fitted = False

    # -- configuration -------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """Return every setting that determines the output (JSON-safe)."""
        return {
            "attack": self.name,
            "version": self.version,
            "eps": self.eps,
            "alpha": self.alpha,
            "steps": self.steps,
            "random_start": self.random_start,
            "scale_schedule": self.scale_schedule,
            "batch_size": self.batch_size,
            "seed": self.seed,
            **self.method_config(),
        }

    def method_config(self) -> dict[str, Any]:
        """Return the subclass's own settings; part of ``config``."""
        return {}

    def fit_config(self) -> dict[str, Any]:
        """Return the settings that determine ``_fit``'s result (its cache key)."""
        return {}

    # -- per-victim preparation ----------------------------------------------
    def fit(self, model: HashingModel, knowledge: VictimKnowledge) -> None:
        """Prepare for ``model``, checking that ``knowledge`` has what the capabilities require."""
        caps = self.capabilities
        if caps.needs_train_codes and (knowledge.train_codes is None or knowledge.train_labels is None):
            raise UnsupportedPairingError(f"{self.name} needs the victim's training codes and labels")
        if caps.needs_database_codes and (knowledge.database_codes is None or knowledge.database_labels is None):
            raise UnsupportedPairingError(f"{self.name} needs the victim's database codes and labels")
        if caps.needs_train_images and knowledge.train_images is None:
            raise UnsupportedPairingError(f"{self.name} needs the victim's training images")
        self.knowledge = knowledge
        with _frozen_eval(model):
            self._fit(model, knowledge)
        self._fitted = True

    def _fit(self, model: HashingModel, knowledge: VictimKnowledge) -> None:
        """Train per-victim parts; the default has none."""

    def prepared_state(self) -> dict[str, Tensor]:
        """Return tensors that ``_fit`` trained, for caching per victim."""
        return {}

    def load_prepared_state(self, state: dict[str, Tensor]) -> None:
        """Restore ``prepared_state`` output instead of calling ``_fit`` again."""

    def fit_from_state(self, knowledge: VictimKnowledge, state: dict[str, Tensor]) -> None:
        """Prepare from a cached ``prepared_state`` instead of fitting again."""
        self.knowledge = knowledge
        self.load_prepared_state(state)
        self._fitted = True

    # -- the attack --------------------------------------------------------
    def run(
        self, model: HashingModel, images: Tensor, labels: Tensor, target_labels: Tensor | None = None
    ) -> AttackOutput:
        """Return adversarial versions of ``images`` (n, C, H, W) in [0, 1].

        ``labels`` are the queries' multi-hot labels; targeted attacks also
        need ``target_labels`` of the same shape. Inputs are never modified.
        """
        self._check_inputs(images, labels, target_labels)
        if not self._fitted:
            self.fit(model, self.knowledge)
        device = _model_device(model)
        generator = torch.Generator().manual_seed(self.seed)
        adversarial, theory = [], []
        with _frozen_eval(model):
            for start in range(0, images.shape[0], self.batch_size):
                batch = slice(start, start + self.batch_size)
                x = images[batch].to(device)
                y = labels[batch].to(device)
                t = target_labels[batch].to(device) if target_labels is not None else None
                adv = self._perturb(model, x, y, t, generator).detach()
                if self.capabilities.bounded:
                    adv = self.project(x, adv)
                adversarial.append(adv.cpu())
                codes = self._theory_codes(model, x, y, t)
                if codes is not None:
                    theory.append(codes.detach().cpu())
        output = AttackOutput(torch.cat(adversarial), torch.cat(theory) if theory else None)
        self._finish(output)
        return output

    def _perturb(
        self, model: HashingModel, images: Tensor, labels: Tensor, target_labels: Tensor | None,
        generator: torch.Generator,
    ) -> Tensor:
        raise NotImplementedError

    def _theory_codes(
        self, model: HashingModel, images: Tensor, labels: Tensor, target_labels: Tensor | None
    ) -> Tensor | None:
        return None

    def _finish(self, output: AttackOutput) -> None:
        """Hook for attacks that add extra outputs after all batches."""

    # -- shared steps --------------------------------------------------------
    def project(self, images: Tensor, adversarial: Tensor) -> Tensor:
        """Clamp ``adversarial`` into the eps-ball around ``images`` and the [0, 1] box."""
        delta = (adversarial - images).clamp(-self.eps, self.eps)
        return (images + delta).clamp(0.0, 1.0)

    def random_delta(self, images: Tensor, generator: torch.Generator) -> Tensor:
        """Return a U(-eps, eps) start, drawn on the CPU so every device gets the same one."""
        noise = torch.rand(images.shape, generator=generator, dtype=images.dtype)
        delta = (noise * 2 - 1).mul_(self.eps).to(images.device)
        return (images + delta).clamp(0.0, 1.0) - images

    def scale(self, step: int, steps: int | None = None) -> float:
        return scale_at(step, steps or self.steps, self.scale_schedule)

    def sign_pgd(
        self,
        model: HashingModel,
        images: Tensor,
        loss_fn: Callable[[Tensor], Tensor],
        generator: torch.Generator,
        *,
        steps: int | None = None,
        alpha: float | None = None,
        random_start: bool | None = None,
    ) -> Tensor:
        """Minimise ``loss_fn(model(x + delta, scale))`` by L-infinity sign-PGD.

        Each step is ``delta -= alpha * sign(grad)``, then the eps clamp, then
        the image-box clamp, the order of the SAAT code.
        """
        steps = self.steps if steps is None else steps
        alpha = self.alpha if alpha is None else alpha
        start = self.random_start if random_start is None else random_start
        delta = self.random_delta(images, generator) if start else torch.zeros_like(images)
        for step in range(steps):
            delta.requires_grad_(True)
            loss = loss_fn(model(images + delta, self.scale(step, steps)))
            (gradient,) = torch.autograd.grad(loss, delta)
            with torch.no_grad():
                delta = (delta - alpha * gradient.sign()).clamp_(-self.eps, self.eps)
                delta = (images + delta).clamp_(0.0, 1.0) - images
        return (images + delta).detach()

    # -- checks ------------------------------------------------------------
    def _check_inputs(self, images: Tensor, labels: Tensor, target_labels: Tensor | None) -> None:
        if not isinstance(images, Tensor) or images.dim() != 4 or not images.is_floating_point():
            raise DataError(
                f"images must be a float (n, C, H, W) tensor, got "
                f"{getattr(images, 'dtype', type(images).__name__)} of shape {tuple(getattr(images, 'shape', ()))}"
            )
        if torch.isnan(images).any():
            raise DataError(f"images contain {int(torch.isnan(images).sum())} NaN pixels; clean the input first")
        low, high = float(images.min()), float(images.max())
        if low < 0 or high > 1:
            raise DataError(
                f"images must lie on the [0, 1] pixel scale, got values in [{low:.3g}, {high:.3g}]; "
                "pass unnormalised images (the model normalises inside forward)"
            )
        if labels.dim() != 2 or labels.shape[0] != images.shape[0]:
            raise DataError(
                f"labels must be a ({images.shape[0]}, classes) tensor, got shape {tuple(labels.shape)}"
            )
        if self.capabilities.targeted:
            if target_labels is None:
                raise ConfigError(f"{self.name} is targeted and needs target_labels")
            if target_labels.shape != labels.shape:
                raise DataError(
                    f"target_labels have shape {tuple(target_labels.shape)} but labels {tuple(labels.shape)}"
                )
            if bool((target_labels.sum(1) == 0).any()):
                raise DataError(
                    "some target labels are all zero; drop the queries without a valid target first"
                )


class _frozen_eval:
    """Context: eval mode and frozen parameters, both restored on exit."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model

    def __enter__(self) -> torch.nn.Module:
        self.training = self.model.training
        self.flags = [parameter.requires_grad for parameter in self.model.parameters()]
        self.model.eval()
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)
        return self.model

    def __exit__(self, *exc: object) -> None:
        for parameter, flag in zip(self.model.parameters(), self.flags):
            parameter.requires_grad_(flag)
        self.model.train(self.training)


def frozen_eval(model: torch.nn.Module) -> _frozen_eval:
    """Return a context manager that sets eval mode and freezes parameters."""
    return _frozen_eval(model)


def _model_device(model: torch.nn.Module) -> torch.device:
    for tensor in list(model.parameters()) + list(model.buffers()):
        return tensor.device
    return torch.device("cpu")
