"""Drawing the sanity checks' examples from the user's data, and the input checks.

``train`` may be ``(inputs, targets)`` tensors, a map-style Dataset, or a DataLoader.
A draw is a fixed random subset (seeded); from a Dataset or DataLoader it is read again
through the user's own ``__getitem__`` and ``collate_fn`` on every :meth:`Sample.read`,
so a pipeline that changes an example's label between reads is caught.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Subset

from babysit.checks.sanity.report import SanityInputError

__all__ = ["Batch", "Sample", "check_labels", "check_loss", "check_outputs", "draw"]

Batch = tuple[torch.Tensor, torch.Tensor]  # inputs (N, ...), labels (N,)


@dataclass
class Sample:
    """A fixed subset of the training examples; ``read()`` gives them on the model's device."""

    read: Callable[[], Batch]
    size: int
    rereads: bool  # True: each read goes through the user's Dataset / collate_fn again


def _pair(batch: Any, where: str) -> Batch:
    """``batch`` as ``(inputs, targets)`` tensors with the same first dimension."""
    ok = isinstance(batch, tuple | list) and len(batch) == 2
    if not ok or not all(isinstance(t, torch.Tensor) for t in batch):
        raise SanityInputError(
            f"sanity: {where} must give (inputs, targets) tensors, got {type(batch).__name__}; "
            "fix: pass a (inputs, targets) tuple or a Dataset/DataLoader yielding such pairs"
        )
    x, y = batch
    if x.ndim == 0 or y.ndim == 0 or x.shape[0] != y.shape[0]:
        raise SanityInputError(
            f"sanity: {where} inputs {tuple(x.shape)} and targets {tuple(y.shape)} differ in "
            "their first (example) dimension; fix: give one target per example"
        )
    return x, y


def _prefix(total: int, n: int, seed: int) -> list[int]:
    """The first ``n`` indices of a seeded permutation of ``range(total)``."""
    if total == 0:
        raise SanityInputError("sanity: the training data is empty; fix: pass some examples")
    perm = torch.randperm(total, generator=torch.Generator().manual_seed(seed))
    return perm[:n].tolist()


def _collect(loader: DataLoader[Any], n: int, where: str) -> Batch:
    """The first ``n`` examples an (iterable) loader yields, concatenated."""
    xs: list[torch.Tensor] = []
    ys: list[torch.Tensor] = []
    for batch in loader:
        x, y = _pair(batch, where)
        xs.append(x)
        ys.append(y)
        if sum(len(t) for t in ys) >= n:
            break
    if not xs:
        raise SanityInputError(f"sanity: {where} yielded no batch; fix: pass some examples")
    return torch.cat(xs)[:n], torch.cat(ys)[:n]


def draw(train: Any, n: int, *, seed: int, device: torch.device, where: str = "train") -> Sample:
    """A seeded random subset of at most ``n`` examples of ``train``.

    Draws with the same seed are prefixes of one permutation, so a smaller draw is a
    subset of a larger one. An IterableDataset cannot be indexed: its first ``n``
    examples are read once and kept.
    """
    if isinstance(train, tuple | list):
        x, y = _pair(train, where)
        rows = torch.tensor(_prefix(len(y), n, seed), dtype=torch.long)
        xs, ys = x[rows].to(device), y[rows].to(device)
        return Sample(read=lambda: (xs, ys), size=len(rows), rereads=False)
    if isinstance(train, DataLoader):
        loader: DataLoader[Any] = train
    elif isinstance(train, Dataset):
        loader = DataLoader(train)
    else:
        raise SanityInputError(
            f"sanity: {where} is a {type(train).__name__}; fix: pass (inputs, targets) tensors, "
            "a Dataset or a DataLoader"
        )
    dataset = loader.dataset
    if isinstance(dataset, IterableDataset) or not hasattr(dataset, "__len__"):
        x, y = _collect(loader, n, where)
        xs, ys = x.to(device), y.to(device)
        return Sample(read=lambda: (xs, ys), size=len(ys), rereads=False)
    idx = _prefix(len(dataset), n, seed)
    # The whole subset in one batch, through the user's collate_fn, in this process.
    subset = DataLoader(
        Subset(dataset, idx), batch_size=len(idx), shuffle=False, collate_fn=loader.collate_fn
    )

    def read() -> Batch:
        xs, ys = zip(*(_pair(b, where) for b in subset), strict=True)
        return torch.cat(xs).to(device), torch.cat(ys).to(device)

    return Sample(read=read, size=len(idx), rereads=True)


def check_labels(x: torch.Tensor, y: torch.Tensor, num_classes: int, where: str) -> None:
    """Labels are integer class indices in ``[0, C)`` of shape (N,); inputs are finite."""
    if y.ndim != 1 or y.dtype.is_floating_point or y.dtype.is_complex or y.dtype == torch.bool:
        raise SanityInputError(
            f"sanity: {where} targets must be integer class indices of shape (N,), got "
            f"{y.dtype} {tuple(y.shape)}; fix: pass labels 0..C-1 as a long tensor"
        )
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= num_classes:
        raise SanityInputError(
            f"sanity: {where} labels span [{lo}, {hi}], outside [0, {num_classes}) for "
            f"num_classes={num_classes}; fix: remap labels to 0..{num_classes - 1} "
            "or correct num_classes"
        )
    if x.is_floating_point() or x.is_complex():
        bad = int((~torch.isfinite(x)).sum())
        if bad:
            raise SanityInputError(
                f"sanity: {where} inputs hold {bad} non-finite values (nan/inf) among "
                f"{len(y)} examples; fix: clean or impute the data before training"
            )


def check_outputs(out: Any, n: int, num_classes: int) -> torch.Tensor:
    """The model's output is a tensor of shape (N, C)."""
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (n, num_classes):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise SanityInputError(
            f"sanity: model output is {got}, expected (N, num_classes) = ({n}, {num_classes}); "
            "fix: make the model return one score per class (flatten before the last Linear)"
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
