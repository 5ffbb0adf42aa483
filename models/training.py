"""Supervised training of a hashing model on its own loss.

The loop is plain SGD over seeded mini-batches with the step schedule of the
SAAT code; progress goes to a callback, so the library prints nothing.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch

from models.base import HashingModel
from models.codes import binarize
from models.errors import ConfigError, TrainingDivergedError
from models.imageset import ImageSet, iterate_batches

log = logging.getLogger(__name__)

EpochCallback = Callable[[int, dict[str, Any]], None]
BatchCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class TrainConfig:
    """Optimiser settings; ``lr_schedule="thirds"`` divides lr by 10 after each third of the epochs."""

    epochs: int = 100
    batch_size: int = 32
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_schedule: str = "thirds"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ConfigError(
                f"epochs ({self.epochs}) and batch_size ({self.batch_size}) must be positive "
                f"and lr ({self.lr}) greater than 0"
            )
        if self.lr_schedule not in ("thirds", "constant"):
            raise ConfigError(f"unknown lr_schedule {self.lr_schedule!r}; valid: 'thirds', 'constant'")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lr_at(self, epoch: int) -> float:
        """Learning rate of 0-based ``epoch``.

        SAAT's ``hashing.py`` sets ``lr0 * 0.1 ** (e // (E // 3))`` after epoch
        ``e``, so epoch ``t >= 1`` trains at ``lr0 * 0.1 ** ((t - 1) // (E // 3))``.
        """
        if self.lr_schedule == "constant" or epoch == 0:
            return self.lr
        return self.lr * 0.1 ** ((epoch - 1) // max(1, self.epochs // 3))


def train_model(
    model: HashingModel,
    train_set: ImageSet,
    config: TrainConfig,
    *,
    device: torch.device | str = "cpu",
    on_epoch: EpochCallback | None = None,
    on_batch: BatchCallback | None = None,
) -> list[dict[str, Any]]:
    """Train ``model`` in place on ``train_set`` and return one log entry per epoch.

    Raises ``TrainingDivergedError`` when the loss becomes NaN or infinite.
    """
    model.to(device).train()
    loss_fn = model.make_loss(len(train_set)).to(device)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    generator = torch.Generator().manual_seed(config.seed)
    history: list[dict[str, Any]] = []
    step = 0
    batches_per_epoch = math.ceil(len(train_set) / config.batch_size)
    for epoch in range(config.epochs):
        for group in optimizer.param_groups:
            group["lr"] = config.lr_at(epoch)
        started = time.perf_counter()
        total, count = 0.0, 0
        for batch, (images, labels, indices) in enumerate(
            iterate_batches(train_set, config.batch_size, shuffle=True, generator=generator, device=device)
        ):
            outputs = model(images, model.training_scale(step))
            loss = loss_fn(outputs, labels, indices)
            if not torch.isfinite(loss):
                raise TrainingDivergedError(
                    f"{model.name} loss became {loss.item()} at epoch {epoch + 1}, batch {batch + 1}; "
                    f"lower the learning rate (now {config.lr_at(epoch)})"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(indices)
            count += len(indices)
            step += 1
            if on_batch is not None:
                on_batch(batch + 1, batches_per_epoch)
        entry = {
            "epoch": epoch + 1,
            "loss": total / max(count, 1),
            "lr": config.lr_at(epoch),
            "seconds": time.perf_counter() - started,
        }
        history.append(entry)
        log.info("%s epoch %d/%d: loss %.4f, lr %.4g, %.1f s", model.name, epoch + 1, config.epochs,
                 entry["loss"], entry["lr"], entry["seconds"])
        if on_epoch is not None:
            on_epoch(epoch + 1, entry)
    model.eval()
    return history


@torch.no_grad()
def encode_images(
    model: HashingModel, image_set: ImageSet, *, batch_size: int = 1000, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Return the binary codes (float32 -1/+1, on the CPU) of every image, in eval mode."""
    was_training = model.training
    model.eval()
    codes = [
        binarize(model(images)).cpu()
        for images, _, _ in iterate_batches(image_set, batch_size, device=device)
    ]
    model.train(was_training)
    return torch.cat(codes) if codes else torch.empty(0, model.n_bits)
