"""The sanity checks' input checks, before any check runs: the examples, labels, outputs, loss.

The examples are read through :mod:`babysit.splits` (a seeded random subset; from a Dataset
or DataLoader read again on every :meth:`~babysit.splits.Rows.read`, so a pipeline that
changes an example's label between reads is caught); a split it cannot read becomes a
:class:`SanityInputError`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from babysit.checks.sanity.report import SanityInputError
from babysit.errors import DataError
from babysit.splits import Batch, Rows, Split, draw
from babysit.tasks import LossFn
from babysit.training.evaluate import class_dim, scored_positions

__all__ = ["check_labels", "check_loss", "check_outputs", "examples", "probe"]


@contextmanager
def _input_error() -> Iterator[None]:
    """A split the reader refuses is a sanity input error (same one-line message)."""
    try:
        yield
    except DataError as err:
        raise SanityInputError(str(err)) from None


def examples(train: Split, n: int, *, seed: int, device: torch.device) -> Rows:
    """A seeded random subset of at most ``n`` training examples; ``read()`` gives them."""
    with _input_error():
        rows = draw(train, n, seed=seed, name="train", where="sanity", device=device)

    def read() -> Batch:
        with _input_error():
            return rows.read()

    return replace(rows, read=read)


def check_labels(
    x: torch.Tensor, y: torch.Tensor, num_classes: int, where: str, ignore_index: int | None
) -> None:
    """Labels are integer class indices in ``[0, C)``, of shape (N,) or (N, T) (a sequence
    model's tokens); negative ones and ``ignore_index`` are positions the loss ignores (the
    probe then finds a loss that does not). Inputs are finite."""
    if y.ndim == 0 or y.dtype.is_floating_point or y.dtype.is_complex or y.dtype == torch.bool:
        raise SanityInputError(
            f"sanity: {where} targets must be integer class indices of shape (N,) or (N, T), "
            f"got {y.dtype} {tuple(y.shape)}; fix: pass labels 0..C-1 as a long tensor"
        )
    scored = y[scored_positions(y, ignore_index)]
    if scored.numel() == 0:
        raise SanityInputError(
            f"sanity: every {where} target is ignored (negative or ignore_index="
            f"{ignore_index}); fix: pass examples with at least one target 0..C-1"
        )
    hi = int(scored.max())
    if hi >= num_classes:
        raise SanityInputError(
            f"sanity: {where} labels span [{int(scored.min())}, {hi}], outside "
            f"[0, {num_classes}) for num_classes={num_classes}; fix: remap labels to "
            f"0..{num_classes - 1} or correct num_classes (a language model: the vocabulary)"
        )
    if x.is_floating_point() or x.is_complex():
        bad = int((~torch.isfinite(x)).sum())
        if bad:
            raise SanityInputError(
                f"sanity: {where} inputs hold {bad} non-finite values (nan/inf) among "
                f"{len(y)} examples; fix: clean or impute the data before training"
            )


def check_outputs(out: Any, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """The model's output is a tensor of class scores for ``y``: (N, C) for (N,) targets,
    (N, T, C) or (N, C, T) for (N, T) targets."""
    dim = class_dim(out, y) if isinstance(out, torch.Tensor) else None
    if dim is None or out.shape[dim] != num_classes:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        expected = (
            f"(N, num_classes) = ({len(y)}, {num_classes})"
            if y.ndim == 1
            else f"(N, T, num_classes) = ({', '.join(map(str, y.shape))}, {num_classes})"
        )
        raise SanityInputError(
            f"sanity: model output is {got}, expected {expected}; fix: make the model return "
            "one score per class (a model returning (logits, loss): wrap it to return logits)"
        )
    return out


def check_loss(loss: Any, n: int) -> float:
    """The data loss at init is a finite scalar tensor; returns it as a float."""
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        got = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
        raise SanityInputError(
            f"sanity: loss_fn returned {got}, expected a scalar tensor; "
            "fix: reduce the loss to its mean (reduction='mean')"
        )
    value = float(loss.detach())
    if not math.isfinite(value):
        raise SanityInputError(
            f"sanity: the loss at init is {value} on {n} training examples (reg = 0); "
            "fix: check the loss function (log of 0?) and the inputs' scale"
        )
    return value


def probe(model: nn.Module, loss_fn: LossFn, batch: Batch, num_classes: int) -> None:
    """Output shape (N, C) and a finite scalar loss at init, on a copy in train mode."""
    x, y = batch
    model = copy.deepcopy(model).train()
    with torch.no_grad():
        try:
            out = model(x)
        except Exception as err:  # any failure of the user's forward is an input problem
            raise SanityInputError(
                f"sanity: the model failed on training inputs {tuple(x.shape)}: {err}; "
                "fix: make the model accept a batch of the training inputs"
            ) from err
        out = check_outputs(out, y, num_classes)
        try:
            loss = loss_fn(out, y)
        except Exception as err:
            negative = (
                f" (targets down to {int(y.min())}: remap labels to 0..C-1, or give the loss "
                "that ignore_index)"
                if bool((y < 0).any())
                else ""
            )
            raise SanityInputError(
                f"sanity: loss_fn failed on outputs {tuple(out.shape)} and targets "
                f"{y.dtype} {tuple(y.shape)}: {err}; fix: match the loss to the model's "
                f"output{negative}"
            ) from err
        check_loss(loss, len(y))
