"""The minibatches of a population: each member's data order is its seed's, as the trainer's.

Members that share a seed share their minibatches: with one seed, every step yields one
(B, ...) batch for all members (the fast, common case of a search). With several, one
``splits.Batches`` per seed (its generator seeded as ``seed_everything`` seeds the
trainer's) is read in step, and each member gets its seed's batch: (P, B, ...).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

from babysit.splits import Batches

__all__ = ["Batch", "DataOrders"]

Batch = tuple[Tensor, Tensor, bool]  # x, y, and whether they carry a member dimension


def _on_device(split: Any, device: torch.device) -> Any:
    """A tensor split moved to ``device`` once (a Dataset or DataLoader as it is)."""
    if isinstance(split, tuple | list) and all(isinstance(t, Tensor) for t in split):
        return tuple(t.to(device) for t in split)
    return split


class DataOrders:
    """Iterate an epoch's minibatches for members with the given seeds (row order)."""

    def __init__(
        self, split: Any, seeds: Sequence[int], *, batch_size: int, device: torch.device
    ) -> None:
        distinct = sorted(set(seeds))
        split = _on_device(split, device)
        self.orders = [
            Batches(
                split,
                batch_size,
                shuffle=True,
                generator=torch.Generator().manual_seed(seed),
                device=device,
                name="train",
            )
            for seed in distinct
        ]
        self.rows = torch.tensor([distinct.index(s) for s in seeds], device=device)

    def __len__(self) -> int:
        return len(self.orders[0])

    def __iter__(self) -> Iterator[Batch]:
        if len(self.orders) == 1:
            for x, y in self.orders[0]:
                yield x, y, False
            return
        for parts in zip(*self.orders, strict=True):
            x = torch.stack([p[0] for p in parts]).index_select(0, self.rows)
            y = torch.stack([p[1] for p in parts]).index_select(0, self.rows)
            yield x, y, True

    def select(self, rows: Tensor) -> None:
        """Keep the members at ``rows`` (the others stopped)."""
        self.rows = self.rows.index_select(0, rows)
