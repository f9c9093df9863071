"""What any model can reach on the overfitting subset, against hand-counted groups."""

from __future__ import annotations

import math

import pytest
import torch

from babysit.checks.sanity.reachable import reachable


def test_distinct_inputs_reach_everything() -> None:
    x = torch.eye(5)
    got = reachable(x, torch.tensor([0, 1, 2, 1, 0]), None)
    assert (got.accuracy, got.loss, got.ambiguous) == (1.0, 0.0, 0)


def test_one_input_with_two_labels_caps_accuracy_and_loss() -> None:
    x = torch.tensor([[1.0, 2.0], [1.0, 2.0], [1.0, 2.0], [3.0, 4.0]])
    got = reachable(x, torch.tensor([0, 0, 1, 1]), None)
    assert got.accuracy == pytest.approx(3 / 4)  # predict 0 on the shared input
    # probabilities 2/3, 1/3 on the three: 2 ln(3/2) + ln 3, over 4 positions
    assert got.loss == pytest.approx((2 * math.log(3 / 2) + math.log(3)) / 4)
    assert got.ambiguous == 3


def test_sequences_that_start_alike_are_ambiguous_only_while_their_prefixes_agree() -> None:
    x = torch.tensor([[5, 1, 2], [5, 1, 3], [6, 1, 2]])
    y = torch.tensor([[1, 2, 0], [1, 3, 4], [7, 2, 9]])
    # prefix (5,): targets 1, 1 agree; prefix (5, 1): targets 2, 3 differ; the rest are apart
    got = reachable(x, y, None)
    assert got.accuracy == pytest.approx(8 / 9)
    assert got.loss == pytest.approx(2 * math.log(2) / 9)
    assert got.ambiguous == 2


def test_ignored_targets_are_left_out() -> None:
    x = torch.tensor([[5, 1], [5, 1]])
    y = torch.tensor([[1, -100], [2, 4]])  # the first position differs; one target padded
    got = reachable(x, y, ignore_index=4)
    assert got.accuracy == pytest.approx(1 / 2) and got.ambiguous == 2
    assert got.loss == pytest.approx(math.log(2))
