"""Evaluation: the mean data loss and the task's score over a split."""

from __future__ import annotations

import pytest
import torch
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
