"""Tests of the mainstay, centre and anchor codes against plain numpy loop computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attacks._codes import anchor_codes, center_codes, mainstay_codes, mainstay_votes, signed_vote, tie_break_vector
from models.errors import DataError


def mainstay_by_loops(labels: np.ndarray, codes: np.ndarray, bank_labels: np.ndarray) -> np.ndarray:
    """Return the mainstay votes: cosine-weighted positives minus uniformly weighted negatives."""
    votes = np.zeros((len(labels), codes.shape[1]))
    for i, label in enumerate(labels):
        positive = np.zeros(len(codes))
        negative = np.zeros(len(codes))
        for j, bank_label in enumerate(bank_labels):
            overlap = float(np.dot(label, bank_label))
            positive[j] = overlap / (np.linalg.norm(label) * np.linalg.norm(bank_label) + 1e-8)
            negative[j] = 1.0 if overlap <= 0 else 0.0
        if positive.sum() > 0:
            positive /= positive.sum()
        if negative.sum() > 0:
            negative /= negative.sum()
        for j in range(len(codes)):
            votes[i] += positive[j] * codes[j] - negative[j] * codes[j]
    return votes


def sign_with_fill(votes: np.ndarray, fill: np.ndarray | None) -> np.ndarray:
    """Return sign(votes), with zero entries taken from ``fill`` unless it is None."""
    codes = np.sign(votes)
    if fill is None:
        return codes
    for i in range(codes.shape[0]):
        for k in range(codes.shape[1]):
            if codes[i, k] == 0:
                codes[i, k] = fill[k]
    return codes


def random_bank(rows: int, bits: int, classes: int, seed: int, multi: bool) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 2, (rows, bits), generator=generator).float() * 2 - 1
    if multi:
        labels = (torch.rand(rows, classes, generator=generator) < 0.4).float()
    else:
        labels = torch.nn.functional.one_hot(torch.randint(0, classes, (rows,), generator=generator), classes).float()
    return codes, labels


@pytest.mark.parametrize("multi", [False, True])
def test_mainstay_votes_match_loops(multi: bool) -> None:
    # 31 bank rows: an odd bank makes exact zero votes unlikely, but the test does not rely on it.
    codes, bank_labels = random_bank(31, 12, 5, seed=0, multi=multi)
    queries = torch.tensor([[1.0, 0, 0, 0, 0], [0, 1, 1, 0, 0], [0, 0, 0, 1, 1], [1, 1, 1, 1, 1]])

    votes = mainstay_votes(queries, codes, bank_labels)

    expected = mainstay_by_loops(queries.numpy(), codes.numpy(), bank_labels.numpy())
    assert np.allclose(votes.numpy(), expected, atol=1e-6)


@pytest.mark.parametrize("multi", [False, True])
def test_mainstay_codes_match_loops(multi: bool) -> None:
    codes, bank_labels = random_bank(31, 12, 5, seed=1, multi=multi)
    queries = torch.tensor([[0.0, 1, 0, 0, 0], [1, 0, 0, 1, 0], [0, 0, 1, 0, 1]])
    fill = tie_break_vector(12, seed=4).numpy()

    result = mainstay_codes(queries, codes, bank_labels, seed=4)

    votes = mainstay_by_loops(queries.numpy(), codes.numpy(), bank_labels.numpy())
    assert np.array_equal(result.numpy(), sign_with_fill(votes, fill))


def test_mainstay_zero_query_label() -> None:
    codes = torch.tensor([[1.0, 1.0, -1.0], [1.0, -1.0, -1.0], [1.0, -1.0, 1.0]])
    bank_labels = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])

    result = mainstay_codes(torch.zeros(1, 2), codes, bank_labels)

    # No positives, every row a negative: sign(-mean B) = sign(-(3, -1, -1) / 3) = (-1, 1, 1).
    assert result.tolist() == [[-1.0, 1.0, 1.0]]


def test_mainstay_zero_bank_labels_negative() -> None:
    # Row 1 has no label, so it is a negative for every query. Row 0 is the only positive of class 0.
    codes = torch.tensor([[1.0, 1.0, 1.0, -1.0], [1.0, -1.0, -1.0, -1.0]])
    bank_labels = torch.tensor([[1.0, 0.0], [0.0, 0.0]])

    votes = mainstay_votes(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), codes, bank_labels)

    # Class 0: b0 - b1 = (0, 2, 2, 0). Class 1 has no positives: -(b0 + b1) / 2 = (-1, 0, 0, 1).
    assert torch.allclose(votes, torch.tensor([[0.0, 2.0, 2.0, 0.0], [-1.0, 0.0, 0.0, 1.0]]), atol=1e-6)
    expected = mainstay_by_loops(np.array([[1.0, 0.0], [0.0, 1.0]]), codes.numpy(), bank_labels.numpy())
    assert np.allclose(votes.numpy(), expected, atol=1e-6)


def test_mainstay_ties_keep() -> None:
    # Two positives of class 0 that disagree on bits 1 and 3, and no negatives: those votes are exactly 0.
    codes = torch.tensor([[1.0, 1.0, -1.0, -1.0], [1.0, -1.0, -1.0, 1.0]])
    bank_labels = torch.tensor([[1.0, 0.0], [1.0, 0.0]])

    kept = mainstay_codes(torch.tensor([[1.0, 0.0]]), codes, bank_labels, zero_bits="keep")

    assert kept.tolist() == [[1.0, 0.0, -1.0, 0.0]]


def test_mainstay_ties_filled() -> None:
    codes = torch.tensor([[1.0, 1.0, -1.0, -1.0], [1.0, -1.0, -1.0, 1.0]])
    bank_labels = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    fill = tie_break_vector(4, seed=9)

    filled = mainstay_codes(torch.tensor([[1.0, 0.0]]), codes, bank_labels, seed=9)

    assert filled[0, 0] == 1.0
    assert filled[0, 2] == -1.0
    assert filled[0, 1] == fill[1]
    assert filled[0, 3] == fill[3]


def test_mainstay_rejects_mismatched_bank() -> None:
    with pytest.raises(DataError, match="rows but 2 label rows"):
        mainstay_codes(torch.ones(1, 2), torch.ones(3, 4), torch.ones(2, 2))
    with pytest.raises(DataError, match="classes"):
        mainstay_codes(torch.ones(1, 3), torch.ones(2, 4), torch.ones(2, 2))


def centre_by_loops(labels: np.ndarray, codes: np.ndarray, bank_labels: np.ndarray) -> np.ndarray:
    """Return CgAT's centre codes with zero bits kept, and an all-zero row where a side is empty."""
    result = np.zeros((len(labels), codes.shape[1]))
    for i, label in enumerate(labels):
        positive = [codes[j] for j in range(len(codes)) if np.dot(label, bank_labels[j]) > 0]
        negative = [codes[j] for j in range(len(codes)) if np.dot(label, bank_labels[j]) <= 0]
        if positive and negative:
            result[i] = np.sign(np.mean(positive, axis=0) - np.mean(negative, axis=0))
    return result


def test_center_codes_match_loops() -> None:
    codes, bank_labels = random_bank(20, 10, 4, seed=2, multi=True)
    queries = torch.tensor([[1.0, 0, 0, 0], [0, 1, 1, 0], [0, 0, 0, 1]])

    result = center_codes(queries, codes, bank_labels)

    expected = centre_by_loops(queries.numpy(), codes.numpy(), bank_labels.numpy())
    assert np.array_equal(result.numpy(), expected)


def test_center_codes_empty_side_zero() -> None:
    codes = torch.tensor([[1.0, -1.0], [-1.0, -1.0]])
    bank_labels = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
    # Row 0 shares class 0 with both bank rows (no negatives), and row 1 shares nothing (no positives).
    queries = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])

    result = center_codes(queries, codes, bank_labels, zero_bits="tie-break")

    assert torch.equal(result, torch.zeros(2, 2))


def test_center_codes_ties() -> None:
    # Positives (1, 1) and (1, -1) average (1, 0), negatives (-1, 1) and (-1, -1) average (-1, 0),
    # so the vote is (2, 0) and bit 1 ties.
    codes = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])
    bank_labels = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    query = torch.tensor([[1.0, 0.0]])
    fill = tie_break_vector(2, seed=0)

    kept = center_codes(query, codes, bank_labels)
    filled = center_codes(query, codes, bank_labels, zero_bits="tie-break")

    assert kept.tolist() == [[1.0, 0.0]]
    assert filled[0, 0] == 1.0
    assert filled[0, 1] == fill[1]


def anchor_database() -> tuple[torch.Tensor, torch.Tensor]:
    """Return 3 rows of class 0 and 2 rows of class 1 with 3-bit codes.

    Bit j of class-0 row j is +1 and the other class-0 rows are -1 there.
    A vote over the 3 class-0 rows drawn without repeats is therefore
    (-1, -1, -1), and any repeated row flips its own bit to +1.
    """
    codes = torch.tensor(
        [
            [1.0, -1.0, -1.0],
            [-1.0, 1.0, -1.0],
            [-1.0, -1.0, 1.0],
            [1.0, 1.0, 1.0],
            [1.0, 1.0, -1.0],
        ]
    )
    labels = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    return codes, labels


def test_anchor_without_replacement_distinct() -> None:
    codes, labels = anchor_database()
    generator = torch.Generator().manual_seed(0)
    targets = torch.tensor([[1.0, 0.0]]).repeat(20, 1)

    anchors = anchor_codes(targets, codes, labels, n_anchor=3, generator=generator)

    assert torch.equal(anchors, -torch.ones(20, 3))


def test_anchor_with_replacement_repeats() -> None:
    codes, labels = anchor_database()
    generator = torch.Generator().manual_seed(0)
    targets = torch.tensor([[1.0, 0.0]]).repeat(20, 1)

    anchors = anchor_codes(targets, codes, labels, n_anchor=3, generator=generator, replace=True)

    # A draw of 3 from 3 rows with replacement has no repeat with probability 3! / 27 = 2 / 9,
    # so some of the 20 draws must show a +1 bit (a repeated row) for this seed.
    assert (anchors == 1).any()


def test_anchor_vote_of_all_matches() -> None:
    codes, labels = anchor_database()
    generator = torch.Generator().manual_seed(5)

    anchors = anchor_codes(torch.tensor([[0.0, 1.0]]), codes, labels, n_anchor=2, generator=generator, seed=3)

    # Both class-1 rows vote: (1, 1, 1) + (1, 1, -1) = (2, 2, 0), so bit 2 takes the tie-break bit.
    fill = tie_break_vector(3, seed=3)
    assert anchors[0, :2].tolist() == [1.0, 1.0]
    assert anchors[0, 2] == fill[2]


def test_anchor_vote_matches_loops() -> None:
    generator = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 2, (30, 8), generator=generator).float() * 2 - 1
    labels = torch.nn.functional.one_hot(torch.arange(30) % 3, 3).float()
    targets = torch.eye(3)

    # n_anchor equals the 10 matches of each class, so every match votes whatever the draw order.
    anchors = anchor_codes(targets, codes, labels, n_anchor=10, generator=generator, zero_bits="keep")

    for row in range(3):
        total = np.zeros(8)
        for j in range(30):
            if j % 3 == row:
                total += codes[j].numpy()
        assert np.array_equal(anchors[row].numpy(), np.sign(total)), row


def test_anchor_single_is_database_code() -> None:
    codes, labels = anchor_database()
    generator = torch.Generator().manual_seed(1)

    anchors = anchor_codes(torch.tensor([[1.0, 0.0]] * 5), codes, labels, n_anchor=1, generator=generator)

    class_zero = {tuple(code) for code in codes[:3].tolist()}
    for anchor in anchors.tolist():
        assert tuple(anchor) in class_zero


def test_anchor_exact_match_only() -> None:
    # The multi-label row (1, 1) is not an exact match for the target (1, 0).
    codes = torch.tensor([[1.0, 1.0], [-1.0, -1.0]])
    labels = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    generator = torch.Generator().manual_seed(0)

    anchors = anchor_codes(torch.tensor([[1.0, 0.0]]), codes, labels, n_anchor=1, generator=generator)

    assert anchors.tolist() == [[1.0, 1.0]]


def test_anchor_too_few_matches() -> None:
    codes, labels = anchor_database()
    generator = torch.Generator().manual_seed(0)

    with pytest.raises(DataError, match="2 exact matches"):
        anchor_codes(torch.tensor([[0.0, 1.0]]), codes, labels, n_anchor=3, generator=generator)


def test_anchor_replace_allows_few_matches() -> None:
    codes, labels = anchor_database()
    generator = torch.Generator().manual_seed(0)

    anchors = anchor_codes(torch.tensor([[0.0, 1.0]]), codes, labels, n_anchor=9, generator=generator, replace=True)

    # Any draw from rows (1, 1, 1) and (1, 1, -1) votes +1 on bits 0 and 1.
    assert anchors[0, :2].tolist() == [1.0, 1.0]


def test_anchor_no_match_even_with_replace() -> None:
    codes, labels = anchor_database()
    generator = torch.Generator().manual_seed(0)

    with pytest.raises(DataError, match="0 exact matches"):
        anchor_codes(torch.tensor([[1.0, 1.0]]), codes, labels, n_anchor=1, generator=generator, replace=True)


def test_signed_vote_rules() -> None:
    votes = torch.tensor([[0.5, 0.0, -2.0, 0.0]])
    fill = tie_break_vector(4, seed=2)

    kept = signed_vote(votes, "keep")
    filled = signed_vote(votes, "tie-break", seed=2)

    assert kept.tolist() == [[1.0, 0.0, -1.0, 0.0]]
    assert filled.tolist() == [[1.0, fill[1].item(), -1.0, fill[3].item()]]


def test_signed_vote_unknown_rule() -> None:
    with pytest.raises(DataError, match="unknown zero-bit rule"):
        signed_vote(torch.zeros(1, 2), "random")


def test_tie_break_vector_seeded() -> None:
    first = tie_break_vector(64, seed=1)

    assert torch.equal(first, tie_break_vector(64, seed=1))
    assert not torch.equal(first, tie_break_vector(64, seed=2))
    assert set(first.tolist()) == {-1.0, 1.0}
