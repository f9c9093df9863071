"""Minibatches and evaluation for any split a Task may hold (tensors, Dataset, DataLoader).

Tensor splits are moved to the device once and shuffled with a seeded generator, which
is much faster than a DataLoader for small data and makes the data order part of the
checkpointed state (resume gives the same batches as an uninterrupted run).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from babysit.tasks import Task

__all__ = ["METRICS", "Batches", "chance_loss", "evaluate", "image_shape", "split_size"]

Batch = tuple[torch.Tensor, torch.Tensor]


def _is_pair(split: Any) -> bool:
    return (
        isinstance(split, tuple | list)
        and len(split) == 2
        and all(isinstance(t, torch.Tensor) for t in split)
    )


def split_size(split: Any) -> int:
    """Number of examples in a split."""
    if _is_pair(split):
        return int(split[0].shape[0])
    if isinstance(split, DataLoader):
        return len(split.dataset)  # type: ignore[arg-type]
    return len(split)


class Batches:
    """Iterate a split in minibatches of ``batch_size`` on ``device``; reshuffled each epoch."""

    def __init__(
        self,
        split: Any,
        batch_size: int,
        *,
        shuffle: bool,
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.generator = generator
        self.loader: DataLoader[Any] | None = None
        if _is_pair(split):
            x, y = split
            if x.shape[0] != y.shape[0]:
                raise ValueError(
                    f"inputs have {x.shape[0]} examples but targets {y.shape[0]}: "
                    "a split must be (inputs, targets) with the same first dimension"
                )
            self.x, self.y = x.to(self.device), y.to(self.device)  # (N, ...), (N,)
        elif isinstance(split, DataLoader):
            self.loader = split
        elif isinstance(split, Dataset):
            self.loader = DataLoader(
                split, batch_size=batch_size, shuffle=shuffle, generator=generator
            )
        else:
            raise TypeError(
                f"a split must be (inputs, targets) tensors, a Dataset or a DataLoader, "
                f"got {type(split).__name__}"
            )
        self.size = split_size(split)

    def __len__(self) -> int:
        if self.loader is not None:
            return len(self.loader)
        return (self.size + self.batch_size - 1) // self.batch_size

    def __iter__(self) -> Iterator[Batch]:
        if self.loader is not None:
            for x, y in self.loader:
                yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            return
        if self.shuffle:
            order = torch.randperm(self.size, generator=self.generator).to(self.device)
        else:
            order = None
        for start in range(0, self.size, self.batch_size):
            if order is None:
                yield (
                    self.x[start : start + self.batch_size],
                    self.y[start : start + self.batch_size],
                )
            else:
                idx = order[start : start + self.batch_size]
                yield self.x[idx], self.y[idx]


def _correct(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Number of rows whose argmax equals the class index target (a 0-dim tensor)."""
    if outputs.ndim != 2 or targets.ndim != 1:
        return torch.zeros((), device=outputs.device)
    return (outputs.argmax(dim=1) == targets).sum()


# name -> per-batch statistic summed over the split, then divided by the number of examples
METRICS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {"acc": _correct}


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Batches,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    metric: str = "acc",
) -> tuple[float, float]:
    """(mean data loss, metric) over a split, in eval mode; the model's mode is restored."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=batches.device)
    stat_sum = torch.zeros((), dtype=torch.float64, device=batches.device)
    n = 0
    stat_fn = METRICS.get(metric)
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


def chance_loss(task: Task) -> float | None:
    """The loss of all-equal scores on a few validation examples (ln C for cross-entropy)."""
    if task.chance_loss is not None:
        return task.chance_loss
    if task.num_classes is None or not isinstance(task.val, tuple | list):
        return None
    targets = task.val[1][:256]
    try:
        value = float(task.loss_fn(torch.zeros(len(targets), task.num_classes), targets))
    except Exception:  # a loss that does not take class scores: no chance reference
        return None
    return value if math.isfinite(value) else None


def image_shape(task: Task) -> tuple[int, ...] | None:
    """(H, W) or (3, H, W) of flat image inputs, so a dense first layer's filters can be drawn."""
    if not isinstance(task.train, tuple | list) or task.train[0].ndim != 2:
        return None
    features = int(task.train[0].shape[1])
    for channels in (1, 3):
        side = math.isqrt(features // channels)
        if side >= 4 and channels * side * side == features:
            return (side, side) if channels == 1 else (channels, side, side)
    return None
