"""The one reader of a data split: ``(inputs, targets)`` tensors, a torch Dataset or a DataLoader.

Everything in babysit that reads the user's data reads it here: the trainer's minibatches
(:class:`Batches`), the gradient check's first few examples (:func:`first`), the sanity
checks' seeded random examples (:func:`draw`), the size of a split and the image shape of
flat inputs. Anything else given as a split, or items that are not ``(inputs, targets)``
with one target per example, raises :class:`~babysit.errors.DataError` in one line: which
split, what it is, what it must be, the fix.

Tensor splits are indexed directly (moved to the device once, shuffled with a seeded
generator: much faster than a DataLoader for small data, and the data order is part of the
checkpointed state). A Dataset or DataLoader is read through the user's own ``__getitem__``
and ``collate_fn`` in this process; :meth:`Rows.read` reads it again on every call, so a
pipeline that changes an example's label between reads can be caught.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, IterableDataset, Subset

from babysit.errors import DataError
from babysit.tasks import Split, Task

__all__ = [
    "KINDS",
    "Batch",
    "Batches",
    "Rows",
    "Split",
    "check_split",
    "check_task",
    "draw",
    "first",
    "image_shape",
    "seeded",
    "split_size",
    "train_view",
]

Batch = tuple[Tensor, Tensor]  # inputs (N, ...), targets (N, ...)
KINDS = "(inputs, targets) tensors, a torch Dataset or a DataLoader"


# --- what a split is ------------------------------------------------------------------
def _label(name: str | None, where: str) -> str:
    """``"sanity: split 'train'"``: who reads which split, the head of every message."""
    split = f"split {name!r}" if name else "a split"
    return f"{where}: {split}" if where else split


def _describe(obj: Any) -> str:
    """``a str``, ``a list of 3 (int, int, int)``: what was given instead of a split."""
    if isinstance(obj, tuple | list):
        kinds = ", ".join(type(t).__name__ for t in obj[:3]) + (", ..." if len(obj) > 3 else "")
        return f"a {type(obj).__name__} of {len(obj)} ({kinds})"
    return f"a {type(obj).__name__}"


def _one_target_each(x: Tensor, y: Tensor, label: str) -> Batch:
    if x.ndim == 0 or y.ndim == 0 or x.shape[0] != y.shape[0]:
        raise DataError(
            f"{label}: inputs {tuple(x.shape)} and targets {tuple(y.shape)} differ in their "
            "first (example) dimension; fix: give one target per example"
        )
    return x, y


def _is_pair(obj: Any) -> bool:
    return (
        isinstance(obj, tuple | list) and len(obj) == 2 and all(isinstance(t, Tensor) for t in obj)
    )


def check_split(split: Split, name: str | None = None, where: str = "") -> None:
    """Raise DataError unless ``split`` is one of :data:`KINDS` (tensors: one target each)."""
    if isinstance(split, DataLoader | Dataset):
        return
    label = _label(name, where)
    if not _is_pair(split):
        raise DataError(
            f"{label} is {_describe(split)}, not {KINDS}; "
            f"fix: give {name or 'the split'} as one of those"
        )
    x, y = split
    _one_target_each(x, y, label)


def _item(batch: Any, name: str | None, where: str) -> Batch:
    """A batch or example read from a Dataset / DataLoader, as (inputs, targets) tensors."""
    label = _label(name, where)
    if not _is_pair(batch):
        raise DataError(
            f"{label} yields {_describe(batch)}, not (inputs, targets) tensors; "
            "fix: make the Dataset's __getitem__ (or the collate_fn) return (inputs, target)"
        )
    x, y = batch
    return _one_target_each(x, y, label)


def _sized(dataset: Any) -> bool:
    return not isinstance(dataset, IterableDataset) and hasattr(dataset, "__len__")


def split_size(split: Split, name: str | None = None) -> int:
    """Number of examples in a split."""
    check_split(split, name)
    if _is_pair(split):
        return int(split[0].shape[0])
    dataset = split.dataset if isinstance(split, DataLoader) else split
    if not _sized(dataset):
        raise DataError(
            f"{_label(name, '')} is an iterable data set without a length; "
            "fix: give a map-style Dataset (with __len__ and __getitem__) or tensors"
        )
    return len(dataset)  # type: ignore[arg-type]


def check_task(task: Task, where: str = "") -> None:
    """Check every split a task holds (train always; val, test, train_eval when given)."""
    check_split(task.train, "train", where)
    for name in ("val", "test", "train_eval"):
        split = getattr(task, name)
        if split is not None and split is not task.train:
            check_split(split, name, where)


def train_view(task: Task) -> tuple[Split, str]:
    """The un-augmented training view the checks read, and its name for messages."""
    return task.train_eval, "train" if task.train_eval is task.train else "train_eval"


# --- a few examples -------------------------------------------------------------------
@dataclass(frozen=True)
class Rows:
    """A fixed set of examples of a split; ``read()`` gives them on the device.

    rereads: each read goes through the user's Dataset / collate_fn again (a Dataset or a
    DataLoader of one); tensors, and iterable data sets (read once), are kept.
    """

    read: Callable[[], Batch]
    size: int
    rereads: bool


@contextmanager
def seeded(seed: int, device: torch.device | str = "cpu") -> Iterator[None]:
    """Seed torch (CPU and ``device``), numpy and random for one block; the caller's streams
    are as they were after it. A Dataset may draw random numbers while it is read, and
    iterating a DataLoader draws one."""
    dev = torch.device(device)
    devices = []
    if dev.type == "cuda":
        devices = [torch.cuda.current_device() if dev.index is None else dev.index]
    np_state, py_state = np.random.get_state(), random.getstate()
    with torch.random.fork_rng(devices=devices):
        torch.default_generator.manual_seed(seed)  # other CUDA devices are left alone
        for index in devices:
            with torch.cuda.device(index):
                torch.cuda.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)
        try:
            yield
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)


def _empty(label: str) -> DataError:
    return DataError(f"{label} is empty; fix: give it some examples")


def _indices(total: int, n: int, seed: int | None, label: str) -> list[int]:
    """The first ``n`` of ``range(total)``, or of a seeded permutation of it."""
    if total == 0:
        raise _empty(label)
    if seed is None:
        return list(range(min(n, total)))
    return torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:n].tolist()


def _stream(loader: DataLoader[Any], n: int, name: str | None, where: str) -> Batch:
    """The first ``n`` examples an iterable loader yields, concatenated."""
    xs: list[Tensor] = []
    ys: list[Tensor] = []
    for batch in loader:
        x, y = _item(batch, name, where)
        xs.append(x)
        ys.append(y)
        if sum(len(t) for t in ys) >= n:
            break
    if not xs:
        raise _empty(_label(name, where))
    return torch.cat(xs)[:n], torch.cat(ys)[:n]


def _rows(
    split: Split, n: int, seed: int | None, name: str | None, where: str, device: Any
) -> Rows:
    check_split(split, name, where)
    dev = torch.device(device)
    label = _label(name, where)
    if _is_pair(split):
        x, y = split
        idx = torch.tensor(_indices(len(y), n, seed, label), dtype=torch.long)
        xs, ys = x[idx].to(dev), y[idx].to(dev)
        return Rows(read=lambda: (xs, ys), size=len(idx), rereads=False)
    loader: DataLoader[Any] = split if isinstance(split, DataLoader) else DataLoader(split)
    if not _sized(loader.dataset):  # cannot be indexed: its first n examples, kept
        x, y = _stream(loader, n, name, where)
        xs, ys = x.to(dev), y.to(dev)
        return Rows(read=lambda: (xs, ys), size=len(ys), rereads=False)
    chosen = _indices(len(loader.dataset), n, seed, label)  # type: ignore[arg-type]
    # The whole subset in one batch, through the user's collate_fn, in this process.
    subset = DataLoader(Subset(loader.dataset, chosen), len(chosen), collate_fn=loader.collate_fn)

    def read() -> Batch:
        xs, ys = zip(*(_item(b, name, where) for b in subset), strict=True)
        return torch.cat(xs).to(dev), torch.cat(ys).to(dev)

    return Rows(read=read, size=len(chosen), rereads=True)


def first(
    split: Split, n: int, *, name: str | None = None, where: str = "", device: Any = "cpu"
) -> Rows:
    """The first ``n`` examples of a split (all of them when it has fewer), in its order."""
    return _rows(split, n, None, name, where, device)


def draw(
    split: Split,
    n: int,
    *,
    seed: int,
    name: str | None = None,
    where: str = "",
    device: Any = "cpu",
) -> Rows:
    """A seeded random subset of at most ``n`` examples: the first ``n`` of a permutation
    drawn with ``seed``, so a smaller draw is a subset of a larger one. An iterable data set
    cannot be indexed: its first ``n`` examples are read once and kept."""
    return _rows(split, n, seed, name, where, device)


# --- minibatches ----------------------------------------------------------------------
class Batches:
    """Iterate a split in minibatches of ``batch_size`` on ``device``; reshuffled each epoch.

    Tensors: a permutation drawn from ``generator`` each epoch (none without ``shuffle``);
    a Dataset: a DataLoader with that generator; a DataLoader: as the user built it.
    """

    def __init__(
        self,
        split: Split,
        batch_size: int,
        *,
        shuffle: bool,
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
        name: str | None = None,
    ) -> None:
        self.size = split_size(split, name)
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.generator = generator
        self.name = name
        self.loader: DataLoader[Any] | None = None
        if _is_pair(split):
            x, y = split
            self.x, self.y = x.to(self.device), y.to(self.device)  # (N, ...), (N,)
        elif isinstance(split, DataLoader):
            self.loader = split
        else:
            self.loader = DataLoader(
                split, batch_size=batch_size, shuffle=shuffle, generator=generator
            )

    def __len__(self) -> int:
        if self.loader is not None:
            return len(self.loader)
        return (self.size + self.batch_size - 1) // self.batch_size

    def __iter__(self) -> Iterator[Batch]:
        if self.loader is not None:
            for batch in self.loader:
                x, y = _item(batch, self.name, "")
                yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            return
        order = None  # a new permutation from the generator each epoch, on the device
        if self.shuffle:
            order = torch.randperm(self.size, generator=self.generator).to(self.device)
        for start in range(0, self.size, self.batch_size):
            end = start + self.batch_size
            rows = slice(start, end) if order is None else order[start:end]
            yield self.x[rows], self.y[rows]


def image_shape(task: Task) -> tuple[int, ...] | None:
    """(H, W) or (3, H, W) of flat image inputs (tensors (N, H*W) or (N, 3*H*W), H >= 4), so
    a dense first layer's filters can be drawn; None otherwise (already images, or not)."""
    if not _is_pair(task.train) or task.train[0].ndim != 2:
        return None
    features = int(task.train[0].shape[1])
    for channels in (1, 3):
        side = math.isqrt(features // channels)
        if side >= 4 and channels * side * side == features:
            return (side, side) if channels == 1 else (channels, side, side)
    return None
