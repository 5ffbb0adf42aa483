"""The hashing network shared by every method: backbone -> hash layer -> tanh.

A method (DPH, DPSH, HashNet, CSQ) subclasses ``HashingModel`` and supplies
its loss through ``make_loss``. ``forward(images, scale)`` returns the
continuous code ``tanh(scale * z)`` that attacks differentiate, and
``encode`` returns the binary code used for retrieval.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from models._registry import Registry
from models.backbones import BACKBONES
from models.codes import binarize
from models.errors import ConfigError

MODELS: Registry = Registry("model")


class HashLoss(nn.Module):
    """A hashing loss with its per-sample training-set buffers.

    DPH, DPSH and HashNet compare each batch against every training row:
    ``U`` holds the latest continuous outputs and ``Y`` the labels, both
    zero until a row is visited, and both written inside ``forward`` before
    the loss is computed, as in the reference code.
    """

    def __init__(self, n_train: int, n_bits: int, n_classes: int) -> None:
        super().__init__()
        self.n_bits = n_bits
        self.register_buffer("U", torch.zeros(n_train, n_bits))
        self.register_buffer("Y", torch.zeros(n_train, n_classes))

    def remember(self, outputs: Tensor, labels: Tensor, indices: Tensor) -> None:
        self.U[indices] = outputs.detach().to(self.U.dtype)
        self.Y[indices] = labels.to(self.Y.dtype)

    def preload(self, outputs: Tensor, labels: Tensor) -> None:
        """Fill every row, as adversarial training does from the victim's codes."""
        self.U.copy_(outputs)
        self.Y.copy_(labels)


class HashingModel(nn.Module):
    """Backbone, hash layer (optionally BatchNorm1d) and ``tanh(scale * z)``.

    Inputs are images on the [0, 1] pixel scale; ``forward`` normalises them
    with the ``mean``/``std`` buffers, so attacks measure eps in pixel units.
    """

    name: ClassVar[str] = "base"
    # Attacks that need input gradients skip models that set this to False.
    differentiable: ClassVar[bool] = True

    def __init__(
        self,
        *,
        n_bits: int = 32,
        n_classes: int = 10,
        backbone: str = "small-cnn",
        in_channels: int = 1,
        image_size: int = 28,
        weights: str | None = None,
        mean: tuple[float, ...] | None = None,
        std: tuple[float, ...] | None = None,
        head_batchnorm: bool | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if not isinstance(n_bits, int) or n_bits < 1:
            raise ConfigError(f"n_bits must be a positive integer, got {n_bits!r}")
        if not isinstance(n_classes, int) or n_classes < 1:
            raise ConfigError(f"n_classes must be a positive integer, got {n_classes!r}")
        backbone_class = BACKBONES.get(backbone)
        torch.manual_seed(seed)
        self.backbone = BACKBONES.create(
            backbone, in_channels=in_channels, image_size=image_size, weights=weights
        )
        if head_batchnorm is None:
            head_batchnorm = backbone_class.default_head_batchnorm
        mean = tuple(mean) if mean is not None else _default_stat(backbone_class.default_mean, in_channels)
        std = tuple(std) if std is not None else _default_stat(backbone_class.default_std, in_channels)
        if len(mean) != in_channels or len(std) != in_channels:
            raise ConfigError(
                f"mean {mean} and std {std} must have one value per input channel ({in_channels})"
            )
        self.hash_layer = nn.Linear(self.backbone.out_features, n_bits)
        self.head_norm = nn.BatchNorm1d(n_bits) if head_batchnorm else nn.Identity()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.n_bits = n_bits
        self.n_classes = n_classes
        self._config: dict[str, Any] = {
            "model": self.name,
            "n_bits": n_bits,
            "n_classes": n_classes,
            "backbone": backbone,
            "in_channels": in_channels,
            "image_size": image_size,
            "weights": weights,
            "mean": list(mean),
            "std": list(std),
            "head_batchnorm": bool(head_batchnorm),
            "seed": seed,
        }

    # -- codes -------------------------------------------------------------
    def pre_activation(self, images: Tensor) -> Tensor:
        """Return ``z``, the hash layer's output before tanh."""
        features = self.backbone((images - self.mean) / self.std)
        return self.head_norm(self.hash_layer(features))

    def forward(self, images: Tensor, scale: float = 1.0) -> Tensor:
        """Return the continuous code ``tanh(scale * z)`` in (-1, 1)."""
        return torch.tanh(scale * self.pre_activation(images))

    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        """Return binary codes in {-1, +1}; call in eval mode for retrieval."""
        return binarize(self.forward(images))

    # -- training ----------------------------------------------------------
    def make_loss(self, n_train: int) -> HashLoss:
        raise NotImplementedError

    def training_scale(self, step: int) -> float:
        """Return the tanh scale for training step ``step``; 1 except for HashNet."""
        return 1.0

    def training_state(self) -> dict[str, Any]:
        """Return state that training advances besides the weights (JSON-safe)."""
        return {}

    def load_training_state(self, state: dict[str, Any]) -> None:
        """Restore what ``training_state`` returned."""

    def config(self) -> dict[str, Any]:
        """Return the keyword arguments that rebuild this model, plus its name."""
        return dict(self._config)

    def extra_config(self) -> dict[str, Any]:
        return {}


def _default_stat(values: tuple[float, ...], channels: int) -> tuple[float, ...]:
    if len(values) == channels:
        return values
    # Single-channel (grey) input: the mean of the RGB statistics.
    return tuple([sum(values) / len(values)] * channels)


def build_model(config: dict[str, Any]) -> HashingModel:
    """Build a model from ``HashingModel.config()`` output (extra keys included)."""
    options = dict(config)
    name = options.pop("model")
    return MODELS.create(name, **options)
