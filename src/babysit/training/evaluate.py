"""Evaluation of a model on a split: the mean data loss and the task's score.

A score is a per-batch pair ``(statistic, positions scored)``, both summed over the
split; the score is their ratio. ``acc`` counts the positions whose argmax is the
target: a classifier's rows ``(N, C)`` against ``(N,)``, and a sequence model's tokens,
``(N, T, C)`` (or torch's ``(N, C, T)``) against ``(N, T)``, flattened over N x T, so
that a language model's accuracy is its per-token accuracy. Positions whose target is
negative (torch's ``ignore_index=-100``, nanoGPT's ``-1``) or equal to
``Task.ignore_index`` (a padding id the loss ignores) are not scored. ``Task.metric``
names one of :data:`SCORES`, or ``"loss"`` (the mean data loss itself: the metric of a
task whose outputs are not class scores, with ``direction="min"``).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import nn

from babysit._registry import Registry
from babysit.errors import TaskError
from babysit.splits import Batches

__all__ = [
    "SCORES",
    "ScoreFn",
    "Tally",
    "class_dim",
    "correct",
    "evaluate",
    "scored_positions",
]

# (outputs, targets, ignore_index) -> (statistic, positions scored): 0-dim tensors, each
# summed over the batches of a split; the score is sum(statistic) / sum(positions)
ScoreFn = Callable[..., tuple[torch.Tensor, torch.Tensor]]
SCORES: Registry[ScoreFn] = Registry("metric", error=TaskError)


def class_dim(outputs: torch.Tensor, targets: torch.Tensor) -> int | None:
    """The class dimension of ``outputs`` for class-index ``targets``, or None.

    -1 when ``outputs.shape[:-1] == targets.shape`` ((N, C) rows, (N, T, C) tokens); 1 for
    torch's ``(N, C, d1, ...)`` against ``(N, d1, ...)``; None when the targets are not
    integer class indices or the shapes do not pair up. (N, T, T) outputs are read as
    (N, T, C).
    """
    if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
        return None
    if outputs.ndim != targets.ndim + 1 or not outputs.is_floating_point():
        return None
    if outputs.shape[:-1] == targets.shape:
        return -1
    if outputs.shape[0] == targets.shape[0] and outputs.shape[2:] == targets.shape[1:]:
        return 1
    return None


def scored_positions(targets: torch.Tensor, ignore_index: int | None) -> torch.Tensor:
    """The positions a score counts (bool, the shape of ``targets``): a target >= 0 and not
    ``ignore_index``."""
    scored = targets >= 0
    return scored if ignore_index is None else scored & (targets != ignore_index)


def correct(
    outputs: torch.Tensor, targets: torch.Tensor, ignore_index: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(positions whose argmax is the target, positions scored), 0-dim tensors.

    Positions: the rows of (N, C) scores, or the N x T tokens of (N, T, C) / (N, C, T)
    scores against (N, T) targets. A target below 0 or equal to ``ignore_index`` is not
    scored. Outputs that are not class scores for the targets: (0, N), so that a score of
    0 says the metric does not apply (use ``metric="loss"``).
    """
    dim = class_dim(outputs, targets)
    if dim is None:
        zero = torch.zeros((), device=outputs.device)
        return zero, zero + outputs.shape[0]
    scored = scored_positions(targets, ignore_index)
    hits = (outputs.argmax(dim=dim) == targets) & scored
    return hits.sum(), scored.sum()


SCORES.add("acc", correct)


class Tally:
    """A score summed over batches: ``add(outputs, targets)`` per batch, then ``value()``.

    ``metric`` names one of :data:`SCORES`; for any other (``"loss"``) nothing is summed
    and ``value()`` is None.
    """

    def __init__(self, metric: str, ignore_index: int | None, device: torch.device) -> None:
        fn = SCORES.get(metric)
        self.fn = None if fn is None else partial(fn, ignore_index=ignore_index)
        self.stat = torch.zeros((), dtype=torch.float64, device=device)
        self.scored = torch.zeros((), dtype=torch.float64, device=device)

    def add(self, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        if self.fn is not None:
            stat, scored = self.fn(outputs, targets)
            self.stat += stat.double()
            self.scored += scored.double()

    def value(self) -> float | None:
        """sum(statistic) / sum(positions scored) (0 when nothing was scored); None for
        a metric that is not a score."""
        if self.fn is None:
            return None
        return (self.stat / self.scored.clamp(min=1)).item()


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Batches,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    metric: str = "acc",
    *,
    ignore_index: int | None = None,
) -> tuple[float, float]:
    """(mean data loss, score) over a split, in eval mode; the model's mode is restored.

    The score is the mean data loss when ``metric`` is not one of :data:`SCORES` ("loss").
    """
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=batches.device)
    tally = Tally(metric, ignore_index, batches.device)
    n = 0
    for x, y in batches:
        out = model(x)
        loss_sum += loss_fn(out, y).double() * x.shape[0]  # loss_fn is a batch mean
        tally.add(out, y)
        n += x.shape[0]
    model.train(was_training)
    mean_loss = (loss_sum / max(n, 1)).item()
    value = tally.value()
    return mean_loss, mean_loss if value is None else value
