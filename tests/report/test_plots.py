"""The report's figures: what each one draws, checked against the data and the notes' numbers."""

from __future__ import annotations

import io

import numpy as np
import pytest
from matplotlib.collections import FillBetweenPolyCollection, PolyCollection
from matplotlib.figure import Figure
from matplotlib.image import imread
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle, StepPatch

from babysit.monitor.probes import PROBES
from babysit.report import _probe_plots, plots
from babysit.report._series import Downsampler, Hist, Series


def _series(y: np.ndarray, x: np.ndarray | None = None, *, buckets: int = 1024) -> Series:
    ds = Downsampler(buckets)
    xs = np.arange(len(y), dtype=float) if x is None else x
    for xi, yi in zip(xs, y, strict=True):
        ds.add(float(xi), float(yi))
    return ds.series("epoch")


def _line(ax: object, label: str) -> Line2D:
    lines = [ln for ln in ax.get_lines() if ln.get_label() == label]  # type: ignore[attr-defined]
    assert len(lines) == 1, f"expected one line labelled {label!r}"
    return lines[0]


def test_smooth_is_the_centered_moving_average() -> None:
    y = np.random.default_rng(0).standard_normal(400) + np.linspace(3, 0, 400)
    s = _series(y)
    k = max(1, round(0.025 * 400))  # the documented window half-width
    oracle = np.array([y[max(0, i - k) : i + k + 1].mean() for i in range(400)])
    np.testing.assert_allclose(plots.smooth(s), oracle, rtol=1e-9, atol=1e-12)


def test_smooth_skips_nonfinite_buckets() -> None:
    y = np.ones(200)
    y[50:60] = np.nan
    smoothed = plots.smooth(_series(y))
    assert np.all(smoothed == 1.0)  # the NaN stretch neither spreads nor shifts the average


def test_loss_figure_has_linear_and_log_panels_over_epochs() -> None:
    epochs = np.linspace(0, 5, 500)
    loss = 2.3 * np.exp(-epochs) + 0.05 * np.random.default_rng(1).random(500) + 0.1
    s = _series(loss, epochs)
    fig = plots.loss_figure({"loss": s}, events={"diverged": [4.0]})
    lin, log = fig.axes
    assert (lin.get_yscale(), log.get_yscale()) == ("linear", "log")
    assert lin.get_xlabel() == log.get_xlabel() == "epoch"
    np.testing.assert_array_equal(_line(lin, "minibatch loss (data + reg)").get_ydata(), loss)
    np.testing.assert_allclose(_line(lin, "smoothed").get_ydata(), plots.smooth(s))
    assert _line(lin, "diverged").get_xdata()[0] == 4.0


def test_loss_figure_compares_like_with_like_and_says_what_each_loss_holds() -> None:
    """The epoch losses hold no regularisation: the smoothed line is the minibatch data loss."""
    epochs = np.arange(1, 201) / 40  # 40 steps per epoch, 5 epochs
    data = 2.3 * np.exp(-epochs) + 0.1
    reg = np.full(200, 0.4)  # reg * sum(w**2): a visible offset
    train = np.array([data[i * 40 : (i + 1) * 40].mean() for i in range(5)])  # epoch means
    val = train + 0.05
    ends = np.arange(1.0, 6.0)
    minibatch = {"data_loss": _series(data, epochs), "loss": _series(data + reg, epochs)}
    epoch_losses = {"train_loss": _series(train, ends), "val_loss": _series(val, ends)}
    lin, log = plots.loss_figure(minibatch, epoch_losses=epoch_losses).axes
    legend = [t.get_text() for t in lin.get_legend().get_texts()]
    assert legend == [
        "minibatch data loss",
        "smoothed",
        "minibatch loss (data + reg)",
        "epoch train loss (data only)",
        "epoch val loss (data only)",
    ]
    for ax in (lin, log):
        np.testing.assert_allclose(_line(ax, "minibatch data loss").get_ydata(), data)
        np.testing.assert_allclose(_line(ax, "minibatch loss (data + reg)").get_ydata(), data + reg)
        np.testing.assert_allclose(_line(ax, "epoch train loss (data only)").get_ydata(), train)
        np.testing.assert_allclose(_line(ax, "epoch val loss (data only)").get_ydata(), val)
    smoothed = _line(lin, "smoothed").get_ydata()
    np.testing.assert_allclose(smoothed, plots.smooth(minibatch["data_loss"]))


def test_loss_figure_shades_the_min_max_band_when_buckets_hold_many_steps() -> None:
    y = np.random.default_rng(2).random(10_000)
    s = _series(y, buckets=64)
    lin = plots.loss_figure({"loss": s}).axes[0]
    bands = [c for c in lin.collections if isinstance(c, FillBetweenPolyCollection)]
    assert bands, "a downsampled loss shows its min-max band"
    verts = np.concatenate([p.vertices for p in bands[0].get_paths()])
    assert verts[:, 1].min() == pytest.approx(y.min()) and verts[:, 1].max() == pytest.approx(
        y.max()
    )


def test_loss_figure_without_positive_losses_keeps_a_linear_log_panel() -> None:
    # e.g. a negative log-likelihood
    fig = plots.loss_figure({"loss": _series(-np.linspace(1, 2, 50))})
    assert fig.axes[1].get_yscale() == "linear"
    assert "no positive" in fig.axes[1].get_title()


def test_per_layer_figure_shades_the_update_ratio_band_around_1e3_on_a_log_axis() -> None:
    spec = PROBES["update_ratio"]
    ratios = {"fc1.weight": _series(np.full(30, 2e-3)), "fc1.bias": _series(np.full(30, 5e-5))}
    shown = {"log_y": spec.log_y, "band": spec.band, "target": spec.target}
    ax = _probe_plots.per_layer_figure(ratios, title=spec.title, ylabel=spec.label, **shown).axes[0]
    assert ax.get_yscale() == "log"
    spans = [p for p in ax.patches if isinstance(p, Rectangle | PolyCollection)]
    assert len(spans) == 1
    lo, hi = spans[0].get_y(), spans[0].get_y() + spans[0].get_height()
    assert lo < 1e-3 < hi and (lo, hi) == pytest.approx((1e-4, 1e-2))
    target = _line(ax, "target ~1e-03")
    assert set(target.get_ydata()) == {1e-3}  # the notes: the ratio should be ~1e-3
    np.testing.assert_array_equal(_line(ax, "fc1.bias").get_ydata(), np.full(30, 5e-5))


def test_accuracy_figure_reports_the_last_train_val_gap() -> None:
    train = _series(np.array([0.5, 0.8, 0.95, 0.99]), np.arange(1.0, 5.0))
    val = _series(np.array([0.5, 0.7, 0.75, 0.74]), np.arange(1.0, 5.0))
    ax = plots.accuracy_figure({"train_acc": train, "val_acc": val}).axes[0]
    assert "+0.250" in ax.get_title()  # 0.99 - 0.74
    assert ax.get_ylim() == pytest.approx((-0.02, 1.02))
    np.testing.assert_array_equal(_line(ax, "val_acc").get_xdata(), [1, 2, 3, 4])


def test_schedule_figure_draws_lr_on_log_axis_and_momentum() -> None:
    lr = _series(np.repeat([0.1, 0.01, 0.001], 100))
    mu = _series(np.linspace(0.5, 0.99, 300))
    lr_ax, mu_ax = plots.schedule_figure(lr, mu).axes
    assert (lr_ax.get_yscale(), mu_ax.get_yscale()) == ("log", "linear")
    assert set(lr_ax.get_lines()[0].get_ydata()) == {0.1, 0.01, 0.001}
    assert len(plots.schedule_figure(lr, None).axes) == 1


def test_stats_figure_has_a_panel_per_present_statistic() -> None:
    dead = {"fc1": _series(np.linspace(0, 0.6, 20))}
    panels = [(s.key, s.title, s.fraction) for s in PROBES["act_stats"].stats]
    fig = _probe_plots.stats_figure({"std": {"fc1": _series(np.ones(20))}, "dead": dead}, panels)
    titles = [ax.get_title() for ax in fig.axes if ax.axison]
    assert titles == ["activation std", "dead fraction (ReLU: never active)"]
    assert fig.axes[1].get_ylim() == pytest.approx((-0.02, 1.02))


def test_histogram_figure_draws_normalised_snapshots_per_layer() -> None:
    edges = np.linspace(-1, 1, 11)
    counts = np.arange(1.0, 11.0)
    layers = {
        "fc1": [Hist(float(t), edges, counts * (t + 1)) for t in range(10)],
        "fc2": [Hist(0.0, edges, counts)],
    }
    fig = _probe_plots.histogram_figure(layers, what="activation", unit="epoch")
    fc1, fc2 = fig.axes[:2]
    steps = [p for p in fc1.patches if isinstance(p, StepPatch)]
    assert len(steps) == 6  # at most 6 snapshots per layer
    for patch in steps:
        np.testing.assert_allclose(patch.get_data().values, counts / counts.sum())
    assert len([p for p in fc2.patches if isinstance(p, StepPatch)]) == 1


def test_images_figure_shows_each_image() -> None:
    grid = np.random.default_rng(3).random((40, 80, 3))
    fig = plots.images_figure([("epoch 1", grid), ("epoch 9", grid[::-1])])
    shown = [ax.get_images()[0].get_array() for ax in fig.axes]
    np.testing.assert_array_equal(shown[0], grid)
    assert [ax.get_title() for ax in fig.axes] == ["epoch 1", "epoch 9"]


def test_to_png_decodes_at_the_figure_size() -> None:
    fig = Figure(figsize=(4, 2))
    fig.add_subplot().plot([0, 1], [1, 0])
    png = plots.to_png(fig, dpi=50)
    assert imread(io.BytesIO(png)).shape[:2] == (100, 200)
