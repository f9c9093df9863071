"""The probes' figures on deep nets: legends beside the lines, titles whole, one snapshot.

Checked on what the figure is drawn from and where matplotlib placed each artist (window
extents after a draw), not on pixels.
"""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.transforms import Bbox

from babysit.monitor.probes import PROBES
from babysit.report._probe_plots import (
    MAX_NAMED,
    histogram_figure,
    per_layer_figure,
    stats_figure,
)
from babysit.report._series import Hist, Series


def _series(y: np.ndarray) -> Series:
    n = y.size
    return Series(np.arange(1.0, n + 1), y, y, y, np.ones(n, dtype=np.int64), 1, n, 0, float(y[-1]))


def _layers(n: int, steps: int = 30) -> dict[str, Series]:
    """n layers with nanoGPT-like (long) names, each line a different constant."""
    return {
        f"transformer.h.{i}.mlp.c_proj.weight": _series(np.full(steps, 1e-3 * (i + 1)))
        for i in range(n)
    }


def _drawn(fig: Figure) -> Bbox:
    fig.canvas.draw()
    return fig.bbox


def _inside(box: Bbox, outer: Bbox, slack: float = 1.0) -> bool:
    return (
        box.x0 >= outer.x0 - slack
        and box.y0 >= outer.y0 - slack
        and box.x1 <= outer.x1 + slack
        and box.y1 <= outer.y1 + slack
    )


def _update_ratio(streams: dict[str, Series]) -> Figure:
    spec = PROBES["update_ratio"]
    return per_layer_figure(
        streams,
        title=spec.title,
        ylabel=spec.label,
        log_y=spec.log_y,
        band=spec.band,
        target=spec.target,
    )


@pytest.mark.parametrize("layers", [3, 40])
def test_the_update_ratio_legend_sits_beside_the_lines(layers: int) -> None:
    fig = _update_ratio(_layers(layers))
    page = _drawn(fig)
    (ax,) = fig.axes
    legend = ax.get_legend()
    box = legend.get_window_extent()
    assert not box.overlaps(ax.get_window_extent())  # covers no line
    assert _inside(box, page) and _inside(ax.title.get_window_extent(), page)
    names = [t.get_text() for t in legend.get_texts()]
    assert names[:2] == ["1e-04 to 1e-02", "target ~1e-03"]
    assert len(names) - 2 == min(layers, 5)  # a deep net: a few named, not 40


def test_a_deep_nets_lines_are_coloured_first_to_last_and_all_drawn() -> None:
    streams = _layers(40)
    (ax,) = _update_ratio(streams).axes
    lines = [line for line in ax.get_lines() if line.get_label() != "target ~1e-03"]
    assert len(lines) == 40 > MAX_NAMED
    for line, s in zip(lines, streams.values(), strict=True):
        np.testing.assert_array_equal(line.get_ydata(), s.mean)
    viridis = colormaps["viridis"]
    assert lines[0].get_color() == viridis(0.0) and lines[-1].get_color() == viridis(1.0)
    named = [line.get_label() for line in lines if not line.get_label().startswith("_")]
    every = list(streams)  # first, last and three evenly spaced between, tails of long names
    assert named == [f"...{every[i][-25:]}" for i in (0, 10, 20, 29, 39)]


@pytest.mark.parametrize("present", [("mean", "std", "dead"), ("mean", "std", "dead", "saturated")])
def test_activation_panels_keep_their_titles_clear_of_the_legend(present: tuple[str, ...]) -> None:
    panels = [(s.key, s.title, s.fraction) for s in PROBES["act_stats"].stats]
    stats = {
        stat: {f"transformer.h.{i}.mlp.gelu": _series(np.full(20, 0.1 * i)) for i in range(24)}
        for stat in present
    }
    fig = stats_figure(stats, panels)
    page = _drawn(fig)
    legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend())]
    assert len(legends) == 1  # one legend for every panel
    legend = legends[0].get_window_extent()
    drawn = [ax for ax in fig.axes if ax.axison]
    assert len(drawn) == len(present)
    titles = [ax.title.get_window_extent() for ax in drawn]
    for ax, title in zip(drawn, titles, strict=True):
        assert _inside(title, page)
        assert not title.overlaps(legend) and not ax.get_window_extent().overlaps(legend)
    for i, a in enumerate(titles):
        assert not any(a.overlaps(b) for b in titles[i + 1 :])


def test_one_histogram_snapshot_has_no_time_colour_bar() -> None:
    edges, counts = np.linspace(-1, 1, 11), np.arange(1.0, 11.0)
    layers = {f"h.{i}": [Hist(8.0, edges, counts)] for i in range(3)}
    fig = histogram_figure(layers, what="activation", unit="iteration")
    assert len(fig.axes) == 3  # the panels, no colour bar
    assert fig.get_suptitle().endswith("at iteration 8")


def test_snapshots_at_several_times_get_a_colour_bar_over_those_times() -> None:
    edges, counts = np.linspace(-1, 1, 11), np.arange(1.0, 11.0)
    layers = {"h.0": [Hist(float(t), edges, counts) for t in (2, 5, 9)]}
    fig = histogram_figure(layers, what="activation", unit="epoch")
    (bar,) = fig.axes[2:]
    assert bar.get_ylabel() == "epoch" and bar.get_ylim() == pytest.approx((2, 9))
