"""The loss at chance: the one home of what "the loss of a model that favours no class" is.

The notes: "Look for correct loss at chance performance" (softmax with C classes:
-ln(1/C), 2.302 for 10; a language model over V tokens: ln V per token). What a
prediction that favours no class looks like depends on what the loss takes: equal scores
(zeros) for cross-entropy or a hinge (the mean margin-1 hinge gives (C-1)/C), log(1/C)
for log-probabilities (NLLLoss), 1/C for probabilities. The first of
:data:`CHANCE_REFERENCES` whose test accepts the outputs and loss is used;
``Task.chance_loss`` overrides it. A reference sees the outputs as rows (M, C): the N rows
of a classifier, or the N x T positions of a sequence model's (N, T, C) or (N, C, T)
outputs (the class dimension found by :func:`babysit.training.evaluate.class_dim`). The
sanity check reads :func:`chance_value`, the trainer's monitor :func:`chance_loss`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from babysit._registry import Registry
from babysit.splits import first, seeded
from babysit.tasks import LossFn, Task
from babysit.training.evaluate import class_dim

__all__ = [
    "CHANCE_EXAMPLES",
    "CHANCE_REFERENCES",
    "ChanceReference",
    "chance_loss",
    "chance_reference",
    "chance_value",
    "is_nll",
    "positions",
]

# (outputs (N, C), loss_fn, C) -> chance-level outputs (N, C), or None where it does not apply
ChanceReference = Callable[[torch.Tensor, LossFn, int], torch.Tensor | None]
CHANCE_REFERENCES: Registry[ChanceReference] = Registry("chance reference")
CHANCE_EXAMPLES = 256  # validation targets the trainer's chance loss is averaged over


def chance_reference(name: str) -> Callable[[ChanceReference], ChanceReference]:
    """Register a chance-level output builder (tried after those registered before it)."""
    return CHANCE_REFERENCES.register(name)


def is_nll(loss_fn: LossFn) -> bool:
    """The loss takes log-probabilities (NLLLoss)."""
    return isinstance(loss_fn, nn.NLLLoss) or loss_fn is F.nll_loss


@chance_reference("log_probabilities")
def _uniform_log_probabilities(out: torch.Tensor, loss_fn: LossFn, c: int) -> torch.Tensor | None:
    """log(1/C) everywhere, for NLLLoss or outputs whose rows are log-probabilities."""
    rows_are_log_probs = bool(
        (out <= 0).all() and (torch.logsumexp(out.double(), dim=1).abs() < 1e-3).all()
    )
    if is_nll(loss_fn) or rows_are_log_probs:
        return torch.full_like(out, -math.log(c))
    return None


@chance_reference("probabilities")
def _uniform_probabilities(out: torch.Tensor, loss_fn: LossFn, c: int) -> torch.Tensor | None:
    """1/C everywhere, for outputs whose rows are probabilities (softmax in the model)."""
    in_unit = bool(((out >= 0) & (out <= 1)).all())
    if in_unit and bool((out.double().sum(dim=1) - 1).abs().max() < 1e-3):
        return torch.full_like(out, 1.0 / c)
    return None


@chance_reference("scores")
def _equal_scores(out: torch.Tensor, loss_fn: LossFn, c: int) -> torch.Tensor | None:
    """All-equal scores (zeros): cross-entropy gives ln C, a margin-1 hinge (C-1)/C in mean."""
    return torch.zeros_like(out)


def chance_value(out: torch.Tensor, y: torch.Tensor, loss_fn: LossFn, c: int) -> tuple[float, str]:
    """The data loss of the first chance-level reference that applies to the outputs
    ``out`` ((N, C), or (N, T, C) / (N, C, T) for (N, T) targets), and its name."""
    dim = class_dim(out, y)
    dim = -1 if dim is None else dim
    moved = out.movedim(dim, -1)  # (..., C)
    for name, build in CHANCE_REFERENCES.items():
        reference = build(moved.reshape(-1, c), loss_fn, c)  # on (M, C) rows
        if reference is not None:
            reference = reference.reshape(moved.shape).movedim(-1, dim)
            with torch.no_grad():
                return float(loss_fn(reference, y)), name
    raise AssertionError("the 'scores' chance reference always applies")


def positions(targets: torch.Tensor, wanted: int) -> int:
    """How many of the examples ``targets`` (N, ...) hold about ``wanted`` target positions:
    ``wanted`` rows of a classifier, ceil(wanted / T) sequences of T tokens (at least 1)."""
    per_example = max(1, math.prod(targets.shape[1:]))
    return max(1, math.ceil(wanted / per_example))


def _output_shapes(targets: torch.Tensor, c: int) -> list[tuple[int, ...]]:
    """The shapes class scores for ``targets`` may take: (N, C); (N, T, C) or (N, C, T)."""
    n, *rest = targets.shape
    shapes = [(n, *rest, c)]
    return [*shapes, (n, c, *rest)] if rest else shapes


def chance_loss(task: Task) -> float | None:
    """The task's loss at chance, for the monitor: ``Task.chance_loss``, else
    :func:`chance_value` on the first validation targets with no outputs seen (zeros, so
    the references that depend on the loss alone decide); None when the task has no
    ``num_classes`` or the loss does not take class scores.

    The targets are read under a fixed seed, leaving the caller's random streams as they
    were (a resumed run must draw what an uninterrupted one draws).
    """
    if task.chance_loss is not None:
        return task.chance_loss
    if task.num_classes is None:
        return None
    with seeded(0):
        _, targets = first(task.val, CHANCE_EXAMPLES, name="val").read()
    targets = targets[: positions(targets, CHANCE_EXAMPLES)]
    for shape in _output_shapes(targets, task.num_classes):  # the loss says which layout
        try:
            outputs = torch.zeros(shape)
            value, _ = chance_value(outputs, targets, task.loss_fn, task.num_classes)
        except Exception:  # a loss that does not take class scores: no chance reference
            continue
        return value if math.isfinite(value) else None
    return None
