"""Task: what babysit needs to know about the user's work (model factory, data, loss).

A task is named in configs as a bundled name (``"digits-mlp"``), ``"pkg.module:fn"``
or ``"path/to/file.py:fn"``; ``fn(**options)`` returns a :class:`Task`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = ["Task", "l2_weights"]

# train/val/test: (inputs, targets) tensors, a torch Dataset, or a DataLoader.
Split = Any
ModelFactory = Callable[[dict[str, Any]], nn.Module]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
RegFn = Callable[[nn.Module, float], torch.Tensor]


def l2_weights(model: nn.Module, strength: float) -> torch.Tensor:
    """L2 penalty ``strength * sum(w**2)`` over weight tensors (ndim >= 2; biases excluded)."""
    weights = [p for p in model.parameters() if p.ndim >= 2]
    if not weights:
        ref = next(model.parameters(), None)
        return torch.zeros((), dtype=ref.dtype if ref is not None else torch.float32)
    total = torch.stack([w.pow(2).sum() for w in weights]).sum()
    return strength * total


@dataclass
class Task:
    """The user's work as babysit sees it.

    model_factory: ``(model_cfg) -> nn.Module``; model_cfg is the config's ``[model]`` table.
    train, val, test: ``(inputs, targets)`` tensors, a Dataset, or a DataLoader.
    loss_fn: ``(outputs, targets) -> scalar`` data loss (regularisation is added by babysit).
    reg_fn: ``(model, strength) -> scalar``; default :func:`l2_weights`.
    metric / direction: the score for checkpoints, search and ensembles ("acc", "max").
    chance_loss: expected loss at init (else derived by the sanity check).
    train_eval: un-augmented view of train for checks (default: train).
    """

    model_factory: ModelFactory
    train: Split
    val: Split
    loss_fn: LossFn
    test: Split = None
    num_classes: int | None = None
    reg_fn: RegFn = l2_weights
    metric: str = "acc"
    direction: str = "max"
    chance_loss: float | None = None
    train_eval: Split = None

    def __post_init__(self) -> None:
        if self.direction not in ("max", "min"):
            raise ValueError(f"Task.direction must be 'max' or 'min', got {self.direction!r}")
        if not callable(self.model_factory) or not callable(self.loss_fn):
            raise TypeError("Task.model_factory and Task.loss_fn must be callables")
        if self.train_eval is None:
            self.train_eval = self.train
