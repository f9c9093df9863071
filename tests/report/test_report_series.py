"""Downsampling for the report: buckets must equal numpy statistics of the raw chunks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from babysit.report._series import Downsampler, Keyed, Thinned


def _stream(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = np.arange(n, dtype=np.float64) + 1  # steps 1..n
    y = 2.3 * np.exp(-x / (n / 4)) + 0.1 * rng.standard_normal(n)
    y[rng.choice(n, size=n // 50, replace=False)] = np.nan  # a few diverged steps
    y[rng.choice(n, size=5, replace=False)] = np.inf
    return x, y


@pytest.mark.parametrize("chunk", [1, 7, 4096])
@pytest.mark.parametrize("n", [10_000, 12_345])
def test_buckets_are_the_numpy_stats_of_consecutive_chunks(n: int, chunk: int) -> None:
    x, y = _stream(n)
    ds = Downsampler(64, chunk=chunk)
    for xi, yi in zip(x, y, strict=True):
        ds.add(float(xi), float(yi))
    s = ds.series()

    w = s.width
    assert n // w < 64 <= n // (w // 2)  # the smallest power-of-two width that fits
    assert len(s) == math.ceil(n / w) and len(s) <= 64 + 1
    assert (s.total, s.nonfinite) == (n, int((~np.isfinite(y)).sum()))
    for i in range(len(s)):
        xs, ys = x[i * w : (i + 1) * w], y[i * w : (i + 1) * w]
        fin = ys[np.isfinite(ys)]
        assert s.x[i] == pytest.approx(xs.mean(), rel=1e-12)
        assert s.count[i] == fin.size
        assert s.mean[i] == pytest.approx(fin.mean(), rel=1e-9, abs=1e-12)
        assert (s.lo[i], s.hi[i]) == (fin.min(), fin.max())
    assert s.last == y[np.isfinite(y)][-1]


def test_a_short_stream_keeps_every_point() -> None:
    x, y = np.arange(100.0), np.linspace(3.0, 0.5, 100)
    ds = Downsampler(1024)
    for xi, yi in zip(x, y, strict=True):
        ds.add(float(xi), float(yi))
    s = ds.series()
    assert s.width == 1
    np.testing.assert_array_equal(s.x, x)
    np.testing.assert_array_equal(s.mean, y)


def test_a_spike_survives_downsampling_in_the_max() -> None:
    ds = Downsampler(32)
    for i in range(100_000):
        ds.add(float(i), 1e3 if i == 77_777 else 1.0)
    s = ds.series()
    assert s.width > 1000
    spike = int(np.argmax(s.hi))
    assert s.hi[spike] == 1e3 and s.lo[spike] == 1.0
    assert spike == 77_777 // s.width


def test_a_bucket_with_only_nonfinite_values_is_nan() -> None:
    ds = Downsampler(4)
    for v in (1.0, 2.0, math.nan, math.inf):
        ds.add(0.0, v)
    s = ds.series()
    assert s.width == 2
    assert s.mean[0] == 1.5 and math.isnan(s.mean[1]) and s.count.tolist() == [2, 0]


def test_thinned_keeps_evenly_spaced_items_and_the_last() -> None:
    keep: Thinned[int] = Thinned(32)
    for i in range(1000):
        keep.add(i)
    items = keep.items()
    assert items[0] == 0 and items[-1] == 999
    kept = items[:-1]
    steps = np.diff(kept)
    assert len(kept) <= 32 and np.all(steps == steps[0]) and steps[0] == keep.stride
    assert keep.seen == 1000


def test_keyed_caps_the_number_of_names_and_counts_the_rest() -> None:
    keyed = Keyed(max_keys=3, buckets=8)
    for step in range(10):
        for name in ("a", "b", "c", "d", "e"):
            keyed.add(name, float(step), 1.0)
    series = keyed.series()
    assert list(series) == ["a", "b", "c"]
    assert keyed.dropped == 2 * 10
    assert all(s.total == 10 for s in series.values())
