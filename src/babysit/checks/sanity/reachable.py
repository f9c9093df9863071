"""What any model can reach on the overfitting subset: the best accuracy and cross-entropy.

The notes ask the model to fit ~20 examples "to zero cost". That is reachable only when no
two positions that look the same to the model want different targets. A model's
prediction is a function of what it sees:

- a classifier's row n sees its input x[n];
- a sequence model whose inputs line up with its targets (x (N, T, ...), y (N, T): a
  language model, where y is x shifted by one) sees at position t at most the prefix
  x[n, :t+1] (a causal model; a bidirectional one sees more and can only do better).

Positions that see the same thing form a group; with target counts c_k in a group of
n_g = sum c_k positions, the best any model can do is predict the most frequent target
(accuracy max c_k / n_g) with probabilities c_k / n_g (cross-entropy
sum_k c_k ln(n_g / c_k), in nats). Two sequences of a character-level language model that
start with the same character and continue differently are such a group: no model gets
both right, so the check asks for the reachable accuracy and loss, not 100 % and 0.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass

import torch

from babysit.training.evaluate import scored_positions

__all__ = ["Reachable", "reachable"]


@dataclass(frozen=True)
class Reachable:
    """accuracy: the best fraction of scored positions any model gets right; loss: the
    lowest mean cross-entropy (nats) over them; ambiguous: scored positions in groups
    with more than one target."""

    accuracy: float
    loss: float
    ambiguous: int


def _groups(x: torch.Tensor, y: torch.Tensor) -> list[int]:
    """The group id of each target position, in y.flatten() order (see the module doc)."""
    rows = x.detach().cpu()
    arr = (rows.float() if rows.dtype == torch.bfloat16 else rows).numpy()
    n = y.shape[0]
    if y.ndim == 2 and tuple(x.shape[:2]) == tuple(y.shape):  # aligned sequences: prefixes
        ids: dict[tuple[int, bytes], int] = {}
        out = []
        for i in range(n):
            prefix = -1  # the id of x[i, :t], grown one position at a time
            for t in range(y.shape[1]):
                prefix = ids.setdefault((prefix, arr[i, t].tobytes()), len(ids))
                out.append(prefix)
        return out
    per_row = max(1, math.prod(y.shape[1:]))  # one input's positions, told apart by index
    seen: dict[bytes, int] = {}
    row_ids = [seen.setdefault(arr[i].tobytes(), len(seen)) for i in range(n)]
    return [row_ids[i] * per_row + t for i in range(n) for t in range(per_row)]


def reachable(x: torch.Tensor, y: torch.Tensor, ignore_index: int | None) -> Reachable:
    """The best accuracy and cross-entropy any model reaches on (x, y); see the module doc.

    x: inputs (N, ...); y: class-index targets (N,) or (N, T); positions that are not
    scored (negative, ``ignore_index``) are left out.
    """
    targets = y.detach().cpu().flatten().tolist()
    keep = scored_positions(y.detach().cpu(), ignore_index).flatten().tolist()
    counts: defaultdict[int, Counter[int]] = defaultdict(Counter)
    for group, target, scored in zip(_groups(x, y), targets, keep, strict=True):
        if scored:
            counts[group][target] += 1
    total = sum(sum(c.values()) for c in counts.values())
    if total == 0:
        return Reachable(1.0, 0.0, 0)
    best = sum(max(c.values()) for c in counts.values())
    loss = 0.0
    ambiguous = 0
    for c in counts.values():
        size = sum(c.values())
        if len(c) > 1:
            ambiguous += size
            loss += sum(k * math.log(size / k) for k in c.values())
    return Reachable(best / total, loss / total, ambiguous)
