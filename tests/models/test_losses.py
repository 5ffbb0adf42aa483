"""Tests of the DPH, DPSH, HashNet and CSQ losses against plain-loop computations.

Each pairwise loss is checked on a batch of 2 outputs against a training
buffer of 5 rows. The loss writes the batch into the buffers before it
computes, so the loop versions first copy the batch into their own buffers.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from models import MODELS
from models.csq import CSQLoss
from models.dph import DPHLoss
from models.dpsh import DPSHLoss
from models.errors import ConfigError
from models.hadamard import hadamard, hash_centres
from models.hashnet import HashNetLoss

N_BITS = 4
OUTPUTS = torch.tensor([[0.9, -0.3, 0.2, -0.8], [-0.5, 0.7, -0.1, 0.4]])
LABELS = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
INDICES = torch.tensor([1, 3])
BUFFER_U = torch.tensor(
    [
        [0.5, 0.5, -0.5, -0.5],
        [0.0, 0.0, 0.0, 0.0],
        [-0.9, 0.8, 0.7, -0.6],
        [0.0, 0.0, 0.0, 0.0],
        [0.3, -0.2, 0.1, 0.9],
    ]
)
BUFFER_Y = torch.tensor(
    [
        [1.0, 0.0, 0.0],
        [0.0, 0.0, 0.0],
        [0.0, 0.0, 1.0],
        [0.0, 0.0, 0.0],
        [0.0, 1.0, 0.0],
    ]
)


def preloaded(loss: torch.nn.Module) -> torch.nn.Module:
    loss.preload(BUFFER_U, BUFFER_Y)
    return loss


def buffers_after_batch() -> tuple[np.ndarray, np.ndarray]:
    """Return the U and Y buffers with the batch rows written at INDICES, as numpy arrays."""
    u = BUFFER_U.numpy().astype(np.float64)
    y = BUFFER_Y.numpy().astype(np.float64)
    for row, index in enumerate(INDICES.tolist()):
        u[index] = OUTPUTS[row].numpy()
        y[index] = LABELS[row].numpy()
    return u, y


def softplus(value: float) -> float:
    return math.log1p(math.exp(value))


def shares_label(first: np.ndarray, second: np.ndarray) -> bool:
    return any(a > 0 and b > 0 for a, b in zip(first, second))


def dph_by_loops() -> float:
    u_all, y_all = buffers_after_batch()
    outputs, labels = OUTPUTS.numpy().astype(np.float64), LABELS.numpy()
    total, count = 0.0, 0
    for i in range(len(outputs)):
        for j in range(len(u_all)):
            theta = sum(outputs[i, k] * u_all[j, k] for k in range(N_BITS)) / N_BITS
            signed = 1.0 if shares_label(labels[i], y_all[j]) else -1.0
            total += (theta - signed) ** 2
            count += 1
    return total / count


def dpsh_by_loops(eta: float, variant: str) -> float:
    u_all, y_all = buffers_after_batch()
    outputs, labels = OUTPUTS.numpy().astype(np.float64), LABELS.numpy()
    n, n_train = len(outputs), len(u_all)
    likelihood = 0.0
    for i in range(n):
        for j in range(n_train):
            theta = 0.5 * sum(outputs[i, k] * u_all[j, k] for k in range(N_BITS))
            similar = 1.0 if shares_label(labels[i], y_all[j]) else 0.0
            likelihood += similar * theta - softplus(theta)
    quantisation = sum((math.copysign(1.0, value) - value) ** 2 for value in outputs.flatten())
    if variant == "cgat":
        return -likelihood / (n * n_train) + eta * quantisation / (n * N_BITS)
    return -likelihood / (n * n_train) + eta * quantisation / (n * n_train)


def hashnet_by_loops(pair_scale: float) -> float:
    u_all, y_all = buffers_after_batch()
    outputs, labels = OUTPUTS.numpy().astype(np.float64), LABELS.numpy()
    pairs = []
    for i in range(len(outputs)):
        for j in range(len(u_all)):
            theta = pair_scale * sum(outputs[i, k] * u_all[j, k] for k in range(N_BITS))
            similar = 1.0 if shares_label(labels[i], y_all[j]) else 0.0
            pairs.append((softplus(theta) - similar * theta, similar))
    total = len(pairs)
    positives = sum(similar for _, similar in pairs)
    negatives = total - positives
    weighted = 0.0
    for loss, similar in pairs:
        weighted += loss * (total / positives if similar else total / negatives)
    return weighted / total


def test_dph_matches_loops() -> None:
    loss = preloaded(DPHLoss(5, N_BITS, 3))

    value = loss(OUTPUTS, LABELS, INDICES)

    assert value.item() == pytest.approx(dph_by_loops(), rel=1e-5)


def test_loss_writes_batch_into_buffers() -> None:
    loss = preloaded(DPHLoss(5, N_BITS, 3))

    loss(OUTPUTS, LABELS, INDICES)

    assert torch.equal(loss.U[INDICES], OUTPUTS)
    assert torch.equal(loss.Y[INDICES], LABELS)
    assert torch.equal(loss.U[0], BUFFER_U[0])


@pytest.mark.parametrize(("variant", "eta"), [("saat", 50.0), ("cgat", 0.001)])
def test_dpsh_matches_loops(variant: str, eta: float) -> None:
    loss = preloaded(DPSHLoss(5, N_BITS, 3, eta=eta, variant=variant))

    value = loss(OUTPUTS, LABELS, INDICES)

    assert value.item() == pytest.approx(dpsh_by_loops(eta, variant), rel=1e-5)


def test_dpsh_default_eta_per_variant(make_model) -> None:
    assert make_model("dpsh").eta == 50.0
    assert make_model("dpsh", variant="cgat").eta == 0.001


@pytest.mark.parametrize(("pair_scale", "expected_scale"), [("saat", 10 / N_BITS), ("prosgan", 0.1), (0.7, 0.7)])
def test_hashnet_matches_loops(make_model, pair_scale: object, expected_scale: float) -> None:
    model = make_model("hashnet", n_bits=N_BITS, n_classes=3, pair_scale=pair_scale)
    loss = preloaded(model.make_loss(5))

    value = loss(OUTPUTS, LABELS, INDICES)

    assert model.pair_scale == pytest.approx(expected_scale)
    assert value.item() == pytest.approx(hashnet_by_loops(expected_scale), rel=1e-5)


def test_hashnet_all_pairs_positive() -> None:
    # Every buffer row carries class 0, so there are no negatives and their weight must not divide by 0.
    loss = HashNetLoss(2, N_BITS, 1, pair_scale=1.0)
    loss.preload(torch.zeros(2, N_BITS), torch.ones(2, 1))
    outputs = torch.tensor([[0.5, 0.5, 0.5, 0.5]])

    value = loss(outputs, torch.ones(1, 1), torch.tensor([0]))

    # The pair with itself has theta = 1 and the pair with the zero row theta = 0. Each weighs total / positives = 1.
    expected = (softplus(1.0) - 1.0 + softplus(0.0)) / 2
    assert value.item() == pytest.approx(expected, rel=1e-6)


def csq_by_loops(outputs: np.ndarray, centres: np.ndarray, lambda_q: float) -> float:
    bce, quantisation = 0.0, 0.0
    for i in range(outputs.shape[0]):
        for k in range(outputs.shape[1]):
            probability = min(max((outputs[i, k] + 1) / 2, 1e-7), 1 - 1e-7)
            target = (centres[i, k] + 1) / 2
            bce -= target * math.log(probability) + (1 - target) * math.log(1 - probability)
            quantisation += (abs(outputs[i, k]) - 1) ** 2
    count = outputs.size
    return bce / count + lambda_q * quantisation / count


def test_csq_matches_loops() -> None:
    centres = torch.tensor([[1.0, 1.0, -1.0, -1.0], [1.0, -1.0, 1.0, -1.0], [-1.0, 1.0, 1.0, -1.0]])
    tie_break = torch.tensor([1.0, -1.0, 1.0, 1.0])
    loss = CSQLoss(centres, tie_break, lambda_q=0.05)
    # Row 0 has class 0 only. Row 1 has classes 1 and 2, whose votes (0, 0, 2, -2) take tie-break bits (1, -1).
    expected_centres = np.array([[1.0, 1.0, -1.0, -1.0], [1.0, -1.0, 1.0, -1.0]])

    value = loss(OUTPUTS, LABELS, INDICES)

    expected = csq_by_loops(OUTPUTS.numpy().astype(np.float64), expected_centres, 0.05)
    assert value.item() == pytest.approx(expected, rel=1e-5)


def test_csq_sample_centre_tie() -> None:
    centres = torch.tensor([[1.0, 1.0, -1.0, -1.0], [1.0, -1.0, 1.0, -1.0], [-1.0, 1.0, 1.0, -1.0]])
    tie_break = torch.tensor([-1.0, 1.0, -1.0, 1.0])
    loss = CSQLoss(centres, tie_break, lambda_q=0.05)
    labels = torch.tensor([[1.0, 1.0, 0.0]])
    # Votes c0 + c1 = (2, 0, 0, -2): bits 1 and 2 tie and take the tie-break bits (1, -1).
    expected = torch.tensor([[1.0, 1.0, -1.0, -1.0]])

    assert torch.equal(loss.sample_centres(labels), expected)


def test_csq_single_label_centre_is_class_centre(make_model) -> None:
    model = make_model("csq")
    loss = model.make_loss(1)
    labels = torch.eye(4)

    assert torch.equal(loss.sample_centres(labels), model.centres)


@pytest.mark.parametrize("name", ["dph", "dpsh", "hashnet", "csq"])
def test_loss_gradient_reaches_weights(make_model, tiny_images, one_hot_labels, name: str) -> None:
    model = make_model(name).train()
    loss_fn = model.make_loss(len(tiny_images))

    loss = loss_fn(model(tiny_images), one_hot_labels, torch.arange(len(tiny_images)))
    loss.backward()

    gradient = model.hash_layer.weight.grad
    assert gradient is not None
    assert torch.isfinite(gradient).all()
    assert gradient.abs().sum() > 0


def test_hashnet_continuation_scale(make_model) -> None:
    model = make_model("hashnet")

    scales = [model.training_scale(step) for step in range(400)]

    # Call number c (1-based) sets the scale when c % 200 == 0: sqrt(1 + 0.005 * 200) = sqrt(2)
    # and sqrt(1 + 0.005 * 400) = sqrt(3).
    assert scales[198] == 1.0  # call 199
    assert scales[199] == pytest.approx(math.sqrt(2.0))  # call 200
    assert scales[398] == pytest.approx(math.sqrt(2.0))  # call 399
    assert scales[399] == pytest.approx(math.sqrt(3.0))  # call 400
    assert model.training_state() == {"iteration": 400, "continuation_scale": pytest.approx(math.sqrt(3.0))}


def test_hashnet_continuation_eval_output(make_model, tiny_images) -> None:
    model = make_model("hashnet", eval_scale="continuation")
    for step in range(200):
        model.training_scale(step)
    model.eval()

    with torch.no_grad():
        expected = torch.tanh(math.sqrt(2.0) * model.pre_activation(tiny_images))
        assert torch.allclose(model(tiny_images), expected, atol=1e-6)


def test_hashnet_eval_scale_one(make_model, tiny_images) -> None:
    model = make_model("hashnet")
    for step in range(200):
        model.training_scale(step)
    model.eval()

    with torch.no_grad():
        expected = torch.tanh(model.pre_activation(tiny_images))
        assert torch.allclose(model(tiny_images), expected, atol=1e-6)


@pytest.mark.parametrize("n_bits", [16, 32, 48, 64])
def test_hadamard_orthogonal(n_bits: int) -> None:
    matrix = hadamard(n_bits)

    assert matrix is not None
    assert torch.equal(matrix.abs(), torch.ones(n_bits, n_bits))
    assert torch.equal(matrix @ matrix.T, n_bits * torch.eye(n_bits))


@pytest.mark.parametrize("n_bits", [16, 32, 48, 64])
def test_centres_from_hadamard(n_bits: int) -> None:
    centres, construction = hash_centres(2 * n_bits, n_bits)
    first, second = centres[:n_bits], centres[n_bits:]

    assert construction == "hadamard"
    assert centres.shape == (2 * n_bits, n_bits)
    assert torch.equal(first @ first.T, n_bits * torch.eye(n_bits))
    assert torch.equal(second, -first)


def hamming_by_loops(codes: torch.Tensor) -> list[int]:
    rows = codes.tolist()
    distances = []
    for i in range(len(rows)):
        for j in range(i + 1, len(rows)):
            distances.append(sum(1 for a, b in zip(rows[i], rows[j]) if a != b))
    return distances


def test_centres_random_fallback() -> None:
    n_bits, n_classes = 16, 40
    centres, construction = hash_centres(n_classes, n_bits, seed=0)
    extra = centres[2 * n_bits :]
    distances = hamming_by_loops(centres)

    assert construction == "hadamard+random"
    assert centres.shape == (n_classes, n_bits)
    assert torch.equal(centres[:n_bits], hadamard(n_bits))
    assert torch.equal(extra.sum(1), torch.zeros(n_classes - 2 * n_bits))  # balanced rows
    assert min(distances) >= n_bits / 4
    assert sum(distances) / len(distances) >= n_bits / 2


def test_centres_random_without_hadamard() -> None:
    # No Hadamard matrix of order 10 exists, so every centre is random.
    centres, construction = hash_centres(3, 10, seed=0)

    assert hadamard(10) is None
    assert construction == "random"
    assert torch.equal(centres.abs(), torch.ones(3, 10))
    assert torch.equal(centres.sum(1), torch.zeros(3))
    assert min(hamming_by_loops(centres)) > 0


def test_centres_seeded() -> None:
    first, _ = hash_centres(40, 16, seed=3)
    second, _ = hash_centres(40, 16, seed=3)

    assert torch.equal(first, second)


def test_csq_registers_centres(make_model) -> None:
    model = make_model("csq", n_bits=16, n_classes=4)
    expected, _ = hash_centres(4, 16, seed=0)

    assert model.centre_construction == "hadamard"
    assert torch.equal(model.centres, expected)
    assert set(model.tie_break.tolist()) <= {-1.0, 1.0}


def test_csq_rejects_one_bit() -> None:
    with pytest.raises(ConfigError, match="at least 2 bits"):
        MODELS.create("csq", n_bits=1, n_classes=2, in_channels=1, image_size=16)
