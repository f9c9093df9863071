"""Evaluation of a model on a split: the mean data loss and the task's score.

A score is a per-batch statistic summed over the split, then divided by the number of
examples (``acc``: the number of rows whose argmax is the target). ``Task.metric`` names
one of :data:`SCORES`, or ``"loss"`` (the mean data loss itself).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from babysit._registry import Registry
from babysit.errors import TaskError
from babysit.splits import Batches

__all__ = ["SCORES", "ScoreFn", "correct", "evaluate"]

# (outputs, targets) -> a 0-dim tensor, summed over the batches of a split
ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
SCORES: Registry[ScoreFn] = Registry("metric", error=TaskError)


def correct(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Number of rows whose argmax equals the class index target (a 0-dim tensor); 0 when
    outputs are not (N, C) scores or targets not (N,) class indices."""
    if outputs.ndim != 2 or targets.ndim != 1:
        return torch.zeros((), device=outputs.device)
    return (outputs.argmax(dim=1) == targets).sum()


SCORES.add("acc", correct)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Batches,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    metric: str = "acc",
) -> tuple[float, float]:
    """(mean data loss, score) over a split, in eval mode; the model's mode is restored.

    The score is the mean data loss when ``metric`` is not one of :data:`SCORES` ("loss").
    """
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=batches.device)
    stat_sum = torch.zeros((), dtype=torch.float64, device=batches.device)
    n = 0
    stat_fn = SCORES.get(metric)
    for x, y in batches:
        out = model(x)
        loss_sum += loss_fn(out, y).double() * x.shape[0]  # loss_fn is a batch mean
        if stat_fn is not None:
            stat_sum += stat_fn(out, y).double()
        n += x.shape[0]
    model.train(was_training)
    mean_loss = (loss_sum / max(n, 1)).item()
    value = (stat_sum / max(n, 1)).item() if stat_fn is not None else mean_loss
    return mean_loss, value
