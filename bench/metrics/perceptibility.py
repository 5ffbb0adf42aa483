"""Size of adversarial perturbations on the [0, 1] pixel scale.

``perturbation_norms`` returns the standard per-image measures.
``saat_parity_perceptibility`` reproduces the three numbers that the original
SAAT evaluation code reports. They are kept only to compare with published
tables, because two of them are matrix norms, not pixel norms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from models.errors import DataError


@dataclass(frozen=True)
class PerturbationNorms:
    """Per-image size of delta = adversarial - clean, each a float64 (images,) tensor."""

    linf: Tensor
    """max |delta| over channels and pixels."""
    l2: Tensor
    """Frobenius norm of delta over channels, height and width."""
    mse: Tensor
    """mean of delta**2 over channels, height and width."""
    psnr: Tensor
    """10 * log10(1 / mse) in dB, inf where mse = 0 (peak value 1)."""

    def summary(self) -> dict[str, float]:
        """Return the means over images, as plain floats.

        ``psnr_mean`` averages only the images with mse > 0, whose PSNR is
        finite, and is inf when every image is unchanged. ``identical_images``
        counts the images with mse = 0.
        """
        changed = self.mse > 0
        psnr_mean = float(self.psnr[changed].mean()) if bool(changed.any()) else math.inf
        return {
            "linf_mean": float(self.linf.mean()),
            "l2_mean": float(self.l2.mean()),
            "mse_mean": float(self.mse.mean()),
            "psnr_mean": psnr_mean,
            "identical_images": int((~changed).sum()),
            "n_images": int(self.mse.numel()),
        }

    def mean(self) -> dict[str, float]:
        """Return ``summary()``, the means over images."""
        return self.summary()


class SaatParityNumbers(NamedTuple):
    """The three perceptibility numbers of the original SAAT evaluation code."""

    matrix_inf_norm: float
    """Mean over images and channels of the max absolute row sum of the H x W perturbation."""
    spectral_norm: float
    """Mean over images and channels of the largest singular value of the H x W perturbation."""
    mse: float
    """Mean of delta**2 over all elements."""


def perturbation_norms(clean: Tensor, adversarial: Tensor) -> PerturbationNorms:
    """Measure delta = adversarial - clean per image.

    Both inputs are (images, channels, height, width) tensors on the [0, 1]
    scale with equal shapes. The norms are symmetric in the two inputs.
    Raises ``DataError`` for other shapes, NaN or values outside [0, 1].
    """
    delta = _perturbation(clean, adversarial)
    flat = delta.flatten(start_dim=1)
    mse = flat.square().mean(dim=1)
    return PerturbationNorms(
        linf=flat.abs().amax(dim=1),
        l2=torch.linalg.vector_norm(flat, ord=2, dim=1),
        mse=mse,
        # log10(1 / 0) is inf, which is the PSNR of an unchanged image.
        psnr=10 * torch.log10(1 / mse),
    )


def saat_parity_perceptibility(clean: Tensor, adversarial: Tensor) -> SaatParityNumbers:
    """Compute the original SAAT perceptibility numbers, for comparison with its tables only.

    Each (image, channel) perturbation is an H x W matrix. The first number
    is the induced infinity-norm, the max absolute ROW SUM, not max |delta|.
    For example, a perturbation of +8/255 at every pixel of a 224 x 224
    image gives 224 * 8/255, about 7.03. The second is the spectral norm.
    Both grow with image size, so report ``perturbation_norms`` for new results.
    """
    delta = _perturbation(clean, adversarial)
    row_sum_norm = torch.linalg.matrix_norm(delta, ord=math.inf, dim=(-2, -1))
    spectral = torch.linalg.matrix_norm(delta, ord=2, dim=(-2, -1))
    return SaatParityNumbers(
        matrix_inf_norm=float(row_sum_norm.mean()),
        spectral_norm=float(spectral.mean()),
        mse=float(delta.square().mean()),
    )


def _perturbation(clean: Tensor, adversarial: Tensor) -> Tensor:
    """Validate both image batches and return their float64 difference."""
    for name, images in (("clean", clean), ("adversarial", adversarial)):
        if images.dim() != 4:
            raise DataError(
                f"{name} must be a 4-D (images, channels, height, width) tensor, "
                f"got shape {tuple(images.shape)}"
            )
    if clean.shape != adversarial.shape:
        raise DataError(
            f"clean has shape {tuple(clean.shape)} but adversarial has shape "
            f"{tuple(adversarial.shape)}; pass matching image batches"
        )
    if clean.shape[0] == 0:
        raise DataError("clean and adversarial contain no images; pass at least one image")
    if clean.device != adversarial.device:
        raise DataError(
            f"clean is on {clean.device} but adversarial is on {adversarial.device}; "
            "move both to one device"
        )

    values = []
    for name, images in (("clean", clean), ("adversarial", adversarial)):
        images = images.to(torch.float64)
        if bool(torch.isnan(images).any()):
            raise DataError(f"{name} contains NaN values; check the attack or the image loader")
        low, high = float(images.min()), float(images.max())
        if low < 0 or high > 1:
            raise DataError(
                f"{name} has values in [{low}, {high}], outside the [0, 1] pixel scale; "
                "divide uint8 images by 255 and undo any mean/std normalization first"
            )
        values.append(images)
    return values[1] - values[0]
