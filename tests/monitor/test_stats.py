"""The probes' statistics against independent oracles: numpy, float64 torch, the notes' formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from babysit.monitor._stats import (
    SATURATION,
    ActivationStats,
    histogram,
    histogram_range,
    histograms,
    to_python,
    update_ratios,
)


def _summary(stats: ActivationStats) -> dict[str, float | None]:
    tensors = stats.tensors()
    return stats.summary(dict(zip(tensors, to_python(list(tensors.values())), strict=True)))


def test_update_ratio_is_the_notes_sgd_formula() -> None:
    # the notes: update = -lr * dW; ratio = ||update|| / ||W|| (want ~1e-3)
    g = torch.Generator().manual_seed(0)
    w = torch.randn(20, 30, generator=g, dtype=torch.float64)
    dw = torch.randn(20, 30, generator=g, dtype=torch.float64)
    lr = 1e-2
    ratio = update_ratios([w.clone()], [w - lr * dw])
    expected = np.linalg.norm((lr * dw).numpy()) / np.linalg.norm(w.numpy())
    assert ratio.tolist() == pytest.approx([expected], rel=1e-5)


def test_update_ratio_of_a_zero_tensor_is_not_finite() -> None:
    ratio = update_ratios([torch.zeros(5), torch.zeros(3)], [torch.ones(5), torch.zeros(3)])
    assert math.isinf(ratio[0]) and math.isnan(ratio[1])


def test_histogram_matches_numpy() -> None:
    x = torch.randn(10_000, generator=torch.Generator().manual_seed(1))
    lo, hi = histogram_range(x).tolist()
    hist = histogram(x, 30, lo, hi)
    assert hist is not None
    counts, edges = np.histogram(x.numpy(), bins=30, range=(lo, hi))
    assert hist["counts"].long().tolist() == counts.tolist()
    assert hist["edges"] == pytest.approx(edges.tolist(), rel=1e-6)


def test_histogram_leaves_out_non_finite_values_and_widens_a_constant() -> None:
    x = torch.tensor([1.0, 1.0, float("nan"), float("inf"), 1.0])
    lo, hi = histogram_range(x).tolist()
    hist = histogram(x, 4, lo, hi)
    assert hist is not None
    assert hist["edges"][0] == 0.5 and hist["edges"][-1] == 1.5
    assert hist["counts"].sum().item() == 3


def test_relu_stats_count_units_never_active_over_the_window() -> None:
    # units 0..2 never positive, 3 positive in one batch only, 4..9 always positive
    a = torch.rand(32, 10) + 0.1
    a[:, :3] = 0.0
    b = a.clone()
    a[:, 3] = 0.0
    b[:, 3] = 0.0
    b[5, 3] = 2.0
    stats = ActivationStats("relu")
    stats.add(a)
    stats.add(b)
    s = _summary(stats)
    both = torch.cat([a, b]).double()
    assert s["dead"] == pytest.approx(3 / 10)
    assert s["mean"] == pytest.approx(both.mean().item(), rel=1e-6)
    assert s["std"] == pytest.approx(both.std(unbiased=False).item(), rel=1e-5)
    assert s["saturated"] is None


def test_conv_units_are_channels() -> None:
    y = torch.rand(4, 6, 5, 5)
    y[:, 2] = 0.0  # channel 2 dead everywhere
    y[0, 4, 1, 1] = 0.0  # one zero elsewhere does not kill channel 4
    stats = ActivationStats("relu")
    stats.add(y)
    assert _summary(stats)["dead"] == pytest.approx(1 / 6)


def test_tanh_and_sigmoid_saturation_is_beyond_095_of_the_range() -> None:
    y = torch.tensor([[-0.99, -0.5, 0.0, 0.96], [0.2, 0.951, -0.94, 0.1]])
    stats = ActivationStats("tanh")
    stats.add(y)
    assert _summary(stats)["saturated"] == pytest.approx(3 / 8)
    s = torch.tensor([[0.001, 0.5, 0.99, 0.97]])  # |2y - 1| > 0.95: y < 0.025 or y > 0.975
    stats = ActivationStats("sigmoid")
    stats.add(s)
    assert _summary(stats)["saturated"] == pytest.approx(2 / 4)
    assert _summary(stats)["dead"] is None
    assert SATURATION == 0.95


@pytest.mark.parametrize(
    ("values", "dead", "saturated"),
    [
        (torch.relu(torch.randn(64, 8)), 0.0, None),  # relu-like: minimum exactly 0
        (torch.sigmoid(torch.randn(64, 8) * 10), None, "some"),  # within (0, 1]
        (torch.tanh(torch.randn(64, 8) * 10), None, "some"),  # within [-1, 1]
        (torch.randn(64, 8) * 3, None, None),  # anything else
    ],
)
def test_kind_is_inferred_from_the_values(
    values: torch.Tensor, dead: float | None, saturated: str | None
) -> None:
    stats = ActivationStats(None)
    stats.add(values)
    s = _summary(stats)
    assert s["dead"] == dead
    assert (s["saturated"] is None) == (saturated is None)
    if saturated:
        assert s["saturated"] is not None and s["saturated"] > 0.5


def test_to_python_copies_scalars_and_vectors_in_order() -> None:
    got = to_python(
        [torch.tensor(1.5), torch.tensor([1, 2]), torch.tensor(2.0, dtype=torch.float64)]
    )
    assert got == [1.5, [1.0, 2.0], 2.0]
    assert to_python([torch.tensor(3.0), torch.tensor(4.0)]) == [3.0, 4.0]


def test_histograms_of_many_tensors_match_numpy_and_skip_the_missing() -> None:
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(500, generator=g), torch.rand(7, 3, generator=g)
    got = histograms({"a": a, "none": None, "b": b}, 8)
    assert list(got) == ["a", "b"]
    for name, x in (("a", a), ("b", b)):
        counts, edges = np.histogram(x.numpy(), bins=8, range=(x.min().item(), x.max().item()))
        assert got[name]["counts"] == counts.tolist()
        assert got[name]["edges"] == pytest.approx(edges.tolist(), rel=1e-6)
