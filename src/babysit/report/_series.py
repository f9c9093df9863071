"""Bounded-memory summaries of metric streams: bucketed min/mean/max series and thinned snapshots.

A report must be drawn from a metrics.jsonl of any length (a million lines and more) without
holding it in memory. :class:`Downsampler` keeps at most ``buckets`` closed buckets of equal
width: when they are full, neighbours are merged pairwise and the width doubles, so bucket
``i`` always summarises records ``[i * width, (i + 1) * width)`` of the stream exactly.
:class:`Thinned` keeps an evenly spaced subset of arbitrary items the same way.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Generic, TypeVar

import numpy as np

__all__ = ["Downsampler", "Hist", "Keyed", "Series", "Thinned"]

T = TypeVar("T")


@dataclass(frozen=True)
class Series:
    """A downsampled stream: one point per bucket of ``width`` consecutive records.

    x: mean x of the bucket's records, shape (B,); mean / lo / hi: mean, min and max of the
    bucket's finite y values (NaN where a bucket holds none), shape (B,); count: finite y
    values per bucket, shape (B,). total / nonfinite: records seen / with a NaN or inf y.
    last: the last finite y seen (NaN if none); unit: what x is ("iteration" or "epoch").
    """

    x: np.ndarray
    mean: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    count: np.ndarray
    width: int
    total: int
    nonfinite: int
    last: float
    unit: str = "iteration"

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def with_x(self, fn: Callable[[np.ndarray], np.ndarray], unit: str) -> Series:
        """The same series with x mapped through ``fn`` (e.g. step -> epoch)."""
        return replace(self, x=fn(self.x), unit=unit)


@dataclass(frozen=True)
class Hist:
    """One histogram snapshot of a layer: ``counts`` (n,) over bin ``edges`` (n + 1,)."""

    x: float  # step, or epoch once mapped
    edges: np.ndarray
    counts: np.ndarray


class Downsampler:
    """Stream (x, y) pairs into at most ``buckets`` + 1 buckets of min/mean/max; O(buckets).

    ``add`` only appends to a pending chunk of ``chunk`` pairs, folded into the buckets with
    numpy when full (a million adds cost about a second, not a Python loop per bucket).
    """

    def __init__(self, buckets: int = 1024, *, chunk: int = 4096) -> None:
        if buckets < 2 or buckets % 2:
            raise ValueError(f"Downsampler(buckets={buckets}): buckets must be even and >= 2")
        self.buckets = buckets
        self.chunk = chunk
        self.width = 1
        self._folded = 0  # records folded into the buckets (the pending chunk not included)
        self._nonfinite = 0
        self._last = math.nan
        self._px: list[float] = []  # pending pairs, not yet folded
        self._py: list[float] = []
        # closed buckets, each exactly `width` records: sum of x, sum / min / max / number of
        # the finite y, shapes (C,) with C < buckets
        self._x = np.zeros(0)
        self._ys = np.zeros(0)
        self._lo = np.zeros(0)
        self._hi = np.zeros(0)
        self._nf = np.zeros(0, dtype=np.int64)
        # the open bucket: records so far, the same sums
        self._on = 0
        self._open = (0.0, 0.0, math.inf, -math.inf, 0)

    @property
    def total(self) -> int:
        """Records added so far."""
        return self._folded + len(self._px)

    def add(self, x: float, y: float) -> None:
        """Append one record; a non-finite y counts in ``nonfinite`` and stays out of the stats."""
        self._px.append(x)
        self._py.append(y)
        if len(self._px) >= self.chunk:
            self._fold()

    def _fold(self) -> None:
        x = np.asarray(self._px, dtype=np.float64)  # (n,)
        y = np.asarray(self._py, dtype=np.float64)  # (n,)
        self._px, self._py = [], []
        finite = np.isfinite(y)
        self._folded += x.size
        self._nonfinite += int(x.size - finite.sum())
        if finite.any():
            self._last = float(y[finite][-1])
        while x.size:
            take = min(self.width - self._on, x.size)  # first fill the open bucket
            self._open = _combine(self._open, _stats(x[:take], y[:take], finite[:take]))
            self._on += take
            x, y, finite = x[take:], y[take:], finite[take:]
            if self._on == self.width:
                self._append(*(np.asarray([v]) for v in self._open))
                self._on, self._open = 0, (0.0, 0.0, math.inf, -math.inf, 0)
            # then whole buckets at once, up to the next merge: (k, width) blocks
            k = min(x.size // self.width, self.buckets - self._x.size)
            if k:
                n = k * self.width
                xs, ys, fs = (a[:n].reshape(k, self.width) for a in (x, y, finite))
                self._append(*_stats(xs, ys, fs, axis=1))
                x, y, finite = x[n:], y[n:], finite[n:]

    def _append(self, *cols: np.ndarray) -> None:
        sx, sy, lo, hi, nf = cols
        self._x = np.concatenate([self._x, sx])
        self._ys = np.concatenate([self._ys, sy])
        self._lo = np.concatenate([self._lo, lo])
        self._hi = np.concatenate([self._hi, hi])
        self._nf = np.concatenate([self._nf, np.asarray(nf, dtype=np.int64)])
        if self._x.size == self.buckets:
            # merge neighbours (2i, 2i+1): every bucket then holds 2 * width records
            self._x = self._x.reshape(-1, 2).sum(1)
            self._ys = self._ys.reshape(-1, 2).sum(1)
            self._lo = self._lo.reshape(-1, 2).min(1)
            self._hi = self._hi.reshape(-1, 2).max(1)
            self._nf = self._nf.reshape(-1, 2).sum(1)
            self.width *= 2

    def series(self, unit: str = "iteration") -> Series:
        """The buckets so far (the partly filled last one included) as arrays."""
        self._fold()
        sizes = np.full(self._x.size, float(self.width))
        sx, sy, lo, hi, nf = self._x, self._ys, self._lo, self._hi, self._nf
        if self._on:
            ox, oy, olo, ohi, onf = self._open
            sizes = np.append(sizes, float(self._on))
            sx, sy, lo, hi = (
                np.append(a, v) for a, v in ((sx, ox), (sy, oy), (lo, olo), (hi, ohi))
            )
            nf = np.append(nf, onf)
        has = nf > 0
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(has, sy / np.maximum(nf, 1), np.nan)
        return Series(
            x=sx / np.maximum(sizes, 1.0),
            mean=mean,
            lo=np.where(has, lo, np.nan),
            hi=np.where(has, hi, np.nan),
            count=nf.astype(np.int64),
            width=self.width,
            total=self.total,
            nonfinite=self._nonfinite,
            last=self._last,
            unit=unit,
        )


Stats = tuple[Any, Any, Any, Any, Any]  # sum x, sum y, min y, max y, finite count


def _stats(x: np.ndarray, y: np.ndarray, finite: np.ndarray, axis: int | None = None) -> Stats:
    """Sums and extremes of the finite y (and the sum of all x) along ``axis``."""
    return (
        x.sum(axis),
        np.where(finite, y, 0.0).sum(axis),
        np.where(finite, y, np.inf).min(axis, initial=np.inf),
        np.where(finite, y, -np.inf).max(axis, initial=-np.inf),
        finite.sum(axis),
    )


def _combine(a: Stats, b: Stats) -> Stats:
    return (a[0] + b[0], a[1] + b[1], min(a[2], b[2]), max(a[3], b[3]), a[4] + b[4])


class Keyed:
    """One :class:`Downsampler` per name (parameter, layer), at most ``max_keys`` names."""

    def __init__(self, *, max_keys: int = 64, buckets: int = 512) -> None:
        self.max_keys = max_keys
        self.buckets = buckets
        self.streams: dict[str, Downsampler] = {}
        self.dropped = 0  # records of names beyond max_keys (counted, not kept)

    def add(self, key: str, x: float, y: float) -> None:
        stream = self.streams.get(key)
        if stream is None:
            if len(self.streams) >= self.max_keys:
                self.dropped += 1
                return
            stream = self.streams[key] = Downsampler(self.buckets)
        stream.add(x, y)

    def series(self, unit: str = "iteration") -> dict[str, Series]:
        return {key: s.series(unit) for key, s in self.streams.items()}


class Thinned(Generic[T]):
    """An evenly spaced subset of at most ``cap`` items of a stream, plus its last item.

    Item ``i`` of the stream is kept iff ``i % stride == 0``; when more than ``cap`` are kept,
    every second one is dropped and the stride doubles, so the kept items stay evenly spaced.
    """

    def __init__(self, cap: int = 32) -> None:
        if cap < 2:
            raise ValueError(f"Thinned(cap={cap}): cap must be >= 2")
        self.cap = cap
        self.stride = 1
        self.seen = 0
        self._items: list[T] = []
        self._last: T | None = None

    def add(self, item: T) -> None:
        if self.seen % self.stride == 0:
            self._items.append(item)
            if len(self._items) > self.cap:
                self._items = self._items[::2]
                self.stride *= 2
        self.seen += 1
        self._last = item

    def items(self) -> list[T]:
        """The kept items in stream order, ending with the stream's last item."""
        if self._last is None or (self._items and self._items[-1] is self._last):
            return list(self._items)
        return [*self._items, self._last]
