"""Evaluation: the mean data loss and the task's score over a split."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from babysit.errors import TaskError
from babysit.splits import Batches
from babysit.training.evaluate import SCORES, evaluate


def _data(n: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 3, generator=g), torch.randint(0, 2, (n,), generator=g)


def test_evaluate_matches_a_direct_computation() -> None:
    x, y = _data()
    model = nn.Linear(3, 2)
    loss, acc = evaluate(model, Batches((x, y), 7, shuffle=False), nn.functional.cross_entropy)
    with torch.no_grad():
        out = model(x)
    assert loss == pytest.approx(float(nn.functional.cross_entropy(out, y)), rel=1e-6)
    assert acc == pytest.approx(float((out.argmax(1) == y).float().mean()))


def test_metric_loss_scores_the_mean_loss_and_restores_the_mode() -> None:
    x, y = _data()
    model = nn.Sequential(nn.Linear(3, 2), nn.Dropout(0.5))
    loss, value = evaluate(
        model, Batches((x, y), 7, shuffle=False), nn.functional.cross_entropy, "loss"
    )
    assert value == loss and model.training


@pytest.mark.parametrize("name", list(SCORES))
def test_every_score_is_perfect_on_one_hot_outputs(name: str) -> None:
    _, y = _data()
    perfect = nn.functional.one_hot(y, 2).float()
    stat, scored = SCORES[name](perfect, y)
    assert float(stat) == float(scored) == len(y)  # summed over a batch: one per example
    assert float(SCORES[name](1 - perfect, y)[0]) == 0


def test_an_unknown_score_names_the_choices() -> None:
    with pytest.raises(TaskError, match="unknown metric 'accs'; did you mean 'acc'"):
        SCORES["accs"]


def _token_accuracy_by_hand(
    logits: torch.Tensor, targets: torch.Tensor, ignore: int | None = None
) -> tuple[int, int]:
    """(right, scored) over every (n, t) in Python loops: the per-token oracle."""
    right = scored = 0
    for n in range(targets.shape[0]):
        for t in range(targets.shape[1]):
            target = int(targets[n, t])
            if target < 0 or target == ignore:
                continue
            scored += 1
            right += int(max(range(logits.shape[2]), key=lambda c: logits[n, t, c]) == target)
    return right, scored


def _tokens(n: int = 6, t: int = 5, c: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(n, t, c, generator=g)
    targets = torch.where(
        torch.rand(n, t, generator=g) < 0.5, logits.argmax(2), torch.randint(0, c, (n, t))
    )
    targets[0, 3:] = -100  # torch's ignore_index: padding at a sequence's end
    targets[2, :2] = -1  # nanoGPT's
    return logits, targets


def test_token_accuracy_is_per_position_and_skips_negative_targets() -> None:
    logits, targets = _tokens()
    right, scored = SCORES["acc"](logits, targets)
    assert (int(right), int(scored)) == _token_accuracy_by_hand(logits, targets)
    assert int(scored) == 6 * 5 - 2 - 2


def test_torchs_n_c_t_layout_scores_as_n_t_c() -> None:
    logits, targets = _tokens()
    by_class_last = SCORES["acc"](logits, targets)
    by_class_second = SCORES["acc"](logits.transpose(1, 2), targets)  # (N, C, T)
    assert [int(v) for v in by_class_second] == [int(v) for v in by_class_last]


def test_a_task_ignore_index_is_not_scored() -> None:
    logits, targets = _tokens()
    right, scored = SCORES["acc"](logits, targets, ignore_index=3)
    assert (int(right), int(scored)) == _token_accuracy_by_hand(logits, targets, ignore=3)
    assert int(scored) < int(SCORES["acc"](logits, targets)[1])


def test_outputs_that_are_not_class_scores_score_zero() -> None:
    right, scored = SCORES["acc"](torch.randn(8, 1), torch.randn(8))  # a regression
    assert (float(right), float(scored)) == (0.0, 8.0)


class _Table(nn.Module):
    """Fixed token logits looked up by example index: outputs (B, T, C) for inputs (B,)."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = nn.Parameter(logits)

    def forward(self, i: torch.Tensor) -> torch.Tensor:
        return self.logits[i]


def test_evaluate_pools_positions_over_batches_not_batch_means() -> None:
    logits, targets = _tokens()

    def loss_fn(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # the loss is not scored
        return F.cross_entropy(out.flatten(0, 1), y.clamp(min=0).flatten())

    right, scored = _token_accuracy_by_hand(logits, targets)
    # batches of 4 and 2 sequences holding different numbers of ignored tokens
    batches = Batches((torch.arange(6), targets), 4, shuffle=False)
    _, acc = evaluate(_Table(logits), batches, loss_fn)
    assert acc == pytest.approx(right / scored, rel=1e-12)
