"""Perturbation norms and the SAAT parity numbers."""

from __future__ import annotations

import math

import pytest
import torch

from bench.metrics import perturbation_norms, saat_parity_perceptibility
from models.errors import DataError


def test_norms_hand_worked():
    # delta = [[0.1, 0], [0, -0.2]] on one 1x2x2 image.
    # Linf 0.2; L2 sqrt(0.01 + 0.04); MSE 0.05 / 4 = 0.0125;
    # PSNR 10 * log10(1 / 0.0125) = 10 * log10(80).
    clean = torch.full((1, 1, 2, 2), 0.5, dtype=torch.float64)
    adversarial = clean + torch.tensor([[[[0.1, 0.0], [0.0, -0.2]]]], dtype=torch.float64)
    norms = perturbation_norms(clean, adversarial)
    assert norms.linf.tolist() == pytest.approx([0.2], abs=1e-12)
    assert norms.l2.tolist() == pytest.approx([math.sqrt(0.05)], abs=1e-12)
    assert norms.mse.tolist() == pytest.approx([0.0125], abs=1e-12)
    assert norms.psnr.tolist() == pytest.approx([10 * math.log10(80)], abs=1e-9)


def test_identical_image_has_infinite_psnr():
    # Image 0 is unchanged. Image 1 moves every pixel of a 1x2x2 image by
    # 0.1: MSE 0.01 and PSNR 20 dB.
    clean = torch.zeros(2, 1, 2, 2)
    adversarial = clean.clone()
    adversarial[1] = 0.1
    norms = perturbation_norms(clean, adversarial)
    assert norms.psnr[0].item() == math.inf
    assert norms.psnr[1].item() == pytest.approx(20.0, abs=1e-5)

    summary = norms.summary()
    assert summary["psnr_mean"] == pytest.approx(20.0, abs=1e-5)
    assert summary["identical_images"] == 1
    assert summary["n_images"] == 2
    assert summary["mse_mean"] == pytest.approx(0.005, abs=1e-9)
    assert norms.mean() == summary


def test_all_identical_images_summary():
    images = torch.rand(3, 3, 4, 4)
    summary = perturbation_norms(images, images.clone()).summary()
    assert summary["psnr_mean"] == math.inf
    assert summary["identical_images"] == 3
    assert summary["linf_mean"] == 0.0


def test_norms_match_direct_formulas():
    generator = torch.Generator().manual_seed(0)
    clean = torch.rand(4, 3, 8, 6, generator=generator)
    adversarial = (clean + (torch.rand(4, 3, 8, 6, generator=generator) - 0.5) * 0.1).clamp(0, 1)
    norms = perturbation_norms(clean, adversarial)
    for i in range(4):
        delta = (adversarial[i].double() - clean[i].double()).reshape(-1)
        assert norms.linf[i].item() == pytest.approx(delta.abs().max().item(), abs=1e-12)
        assert norms.l2[i].item() == pytest.approx(delta.square().sum().sqrt().item(), abs=1e-12)
        assert norms.mse[i].item() == pytest.approx(delta.square().mean().item(), abs=1e-12)


def test_saat_parity_saturated_perturbation():
    # A constant +8/255 on a 224 x 224 channel: every row sums to 224 * 8/255,
    # and the constant matrix a * ones has one singular value a * 224.
    clean = torch.zeros(1, 3, 224, 224)
    adversarial = torch.full((1, 3, 224, 224), 8 / 255)
    numbers = saat_parity_perceptibility(clean, adversarial)
    assert numbers.matrix_inf_norm == pytest.approx(224 * 8 / 255, rel=1e-6)
    assert numbers.matrix_inf_norm == pytest.approx(7.03, abs=0.01)
    assert numbers.spectral_norm == pytest.approx(224 * 8 / 255, rel=1e-6)
    assert numbers.mse == pytest.approx((8 / 255) ** 2, rel=1e-6)


def test_saat_parity_uses_row_sums_not_column_sums():
    # delta = [[0.1, 0.1], [0.3, 0.0]]: row sums 0.2 and 0.3, column sums
    # 0.4 and 0.1. The induced infinity-norm is the max row sum, 0.3.
    clean = torch.zeros(1, 1, 2, 2, dtype=torch.float64)
    adversarial = torch.tensor([[[[0.1, 0.1], [0.3, 0.0]]]], dtype=torch.float64)
    assert saat_parity_perceptibility(clean, adversarial).matrix_inf_norm == pytest.approx(0.3, abs=1e-12)


def test_saat_parity_matches_independent_computation():
    generator = torch.Generator().manual_seed(1)
    clean = torch.rand(3, 2, 7, 5, generator=generator)
    adversarial = torch.rand(3, 2, 7, 5, generator=generator)
    delta = adversarial.double() - clean.double()
    row_sums = delta.abs().sum(dim=-1).amax(dim=-1)
    largest_singular = torch.linalg.svdvals(delta)[..., 0]

    numbers = saat_parity_perceptibility(clean, adversarial)
    assert numbers.matrix_inf_norm == pytest.approx(row_sums.mean().item(), abs=1e-12)
    assert numbers.spectral_norm == pytest.approx(largest_singular.mean().item(), abs=1e-12)
    assert numbers.mse == pytest.approx(delta.square().mean().item(), abs=1e-12)


@pytest.mark.parametrize("function", [perturbation_norms, saat_parity_perceptibility])
def test_shape_mismatch_rejected(function):
    with pytest.raises(DataError, match=r"clean has shape \(2, 3, 4, 4\) but adversarial has shape \(2, 3, 4, 5\)"):
        function(torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 4, 5))


@pytest.mark.parametrize("which", ["clean", "adversarial"])
def test_nan_rejected_naming_input(which):
    images = {"clean": torch.zeros(1, 1, 2, 2), "adversarial": torch.zeros(1, 1, 2, 2)}
    images[which][0, 0, 1, 1] = float("nan")
    with pytest.raises(DataError, match=f"{which} contains NaN"):
        perturbation_norms(images["clean"], images["adversarial"])


def test_values_outside_unit_range_rejected():
    adversarial = torch.zeros(1, 1, 2, 2)
    adversarial[0, 0, 0, 0] = 255.0
    with pytest.raises(DataError, match=r"adversarial has values in \[0.0, 255.0\], outside the \[0, 1\] pixel scale"):
        perturbation_norms(torch.zeros(1, 1, 2, 2), adversarial)


def test_three_dimensional_input_rejected():
    with pytest.raises(DataError, match=r"clean must be a 4-D .* got shape \(3, 4, 4\)"):
        perturbation_norms(torch.zeros(3, 4, 4), torch.zeros(3, 4, 4))
