"""The probes' figures: a line per layer, statistics per layer, histogram snapshots.

Drawn for :mod:`babysit.report._probe_sections` on the page-wide figures of
:func:`babysit.report.plots.new_figure`. A deep net has many layers: past
:data:`MAX_NAMED` lines are coloured first -> last and the legend names a few of them;
legends sit outside the axes, where they cover no line.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib import colormaps, colors
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.figure import Figure

from babysit.report._series import Hist, Series
from babysit.report.plots import new_figure

__all__ = ["MAX_NAMED", "histogram_figure", "per_layer_figure", "stats_figure"]

MAX_NAMED = 8  # layers drawn each in its own colour, each named in the legend


def _short(name: str, limit: int = 28) -> str:
    """A layer name that fits a legend or a panel title: its tail, where it differs."""
    return name if len(name) <= limit else "..." + name[-(limit - 3) :]


def _named_lines(ax: Axes, streams: Mapping[str, Series], *, positive: bool) -> str | None:
    """A line per layer; the legend title when the layers are summarised, else None.

    Up to :data:`MAX_NAMED` layers: a colour and a legend entry each. More (a deep net):
    coloured first -> last along viridis, with legend entries for a few evenly spaced ones,
    so that the legend stays a few lines long. The caller places the legend outside the
    axes, where it covers no line.
    """
    n = len(streams)
    many = n > MAX_NAMED
    named = {round(i) for i in np.linspace(0, n - 1, min(n, 5))} if many else set(range(n))
    for i, (name, s) in enumerate(streams.items()):
        y = np.where(s.mean > 0, s.mean, np.nan) if positive else s.mean
        color = colormaps["viridis"](i / (n - 1)) if many else f"C{i}"
        style = "-" if many else ["-", "--", ":", "-."][i % 4]
        ax.plot(s.x, y, color=color, ls=style, lw=1.1, label=_short(name) if i in named else None)
    if streams:
        ax.set_xlabel(next(iter(streams.values())).unit)
    ax.grid(alpha=0.3, which="both")
    return f"{n} lines, first logged\n(dark) to last (yellow)" if many else None


def _legend_outside(ax: Axes, title: str | None) -> None:
    """The axes' legend at its right, outside (constrained layout makes room for it)."""
    ax.legend(
        fontsize=7,
        title=title,
        title_fontsize=7,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        borderaxespad=0.0,
    )


def per_layer_figure(
    streams: Mapping[str, Series],
    *,
    title: str,
    ylabel: str,
    log_y: bool = False,
    band: tuple[float, float] | None = None,
    target: float | None = None,
) -> Figure:
    """A line per layer (or parameter); ``band`` shaded and ``target`` dashed when given.

    The notes' update : weight ratio, for one: "somewhere around 1e-3" (the target), lower
    suggests the learning rate is too low, higher that it is too high.
    """
    fig, (ax,) = new_figure(height=3.8)
    if band is not None:
        ax.axhspan(*band, color="#2e7d32", alpha=0.12, label=f"{band[0]:.0e} to {band[1]:.0e}")
    if target is not None:
        ax.axhline(target, color="#2e7d32", ls="--", lw=1.2, label=f"target ~{target:.0e}")
    _legend_outside(ax, _named_lines(ax, streams, positive=log_y))
    if log_y:
        ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    return fig


def stats_figure(
    stats: Mapping[str, Mapping[str, Series]], panels: Sequence[tuple[str, str, bool]]
) -> Figure:
    """A panel per statistic present, a line per layer; panels: (stat, title, is a fraction).

    Fractions (of dead or saturated units) get a [0, 1] axis. One legend for all panels,
    right of them (the panel with the most layers names them).
    """
    present = [(stat, title, frac) for stat, title, frac in panels if stats.get(stat)]
    ncols = len(present) if len(present) <= 2 else 2
    fig, axes = new_figure(math.ceil(len(present) / ncols), ncols, height=3.2)
    most = max((len(stats[stat]) for stat, *_ in present), default=0)
    legend: tuple[Axes, str | None] | None = None
    for ax, (stat, title, fraction) in zip(axes, present, strict=False):
        summary = _named_lines(ax, stats[stat], positive=False)
        if legend is None and len(stats[stat]) == most:
            legend = (ax, summary)
        ax.set_title(title, fontsize=10)
        if fraction:
            ax.set_ylim(-0.02, 1.02)
    spare = axes[len(present) :]
    for ax in spare:
        ax.set_axis_off()
    if legend is not None:  # in a spare panel, else right of the panels
        handles, labels = legend[0].get_legend_handles_labels()
        style: dict[str, Any] = {"fontsize": 7, "title": legend[1], "title_fontsize": 7}
        if spare:
            spare[0].legend(handles, labels, loc="center", **style)
        else:
            fig.legend(handles, labels, loc="outside right upper", **style)
    return fig


def histogram_figure(layers: Mapping[str, Sequence[Hist]], *, what: str, unit: str) -> Figure:
    """Per layer, up to 6 snapshots of its histogram (fraction per bin), coloured by time.

    The colour bar maps time to colour; when every snapshot was taken at one time there is
    no time to map, so the snapshots are drawn in one colour and the title says when.
    """
    names = list(layers)
    ncols = min(4, max(2, len(names)))  # one layer: half width, not a stretched panel
    nrows = math.ceil(len(names) / ncols)
    fig, axes = new_figure(nrows, ncols, height=2.4)
    xs = [h.x for hs in layers.values() for h in hs]
    lo, hi = min(xs), max(xs)
    cmap = colormaps["viridis"]
    norm = colors.Normalize(lo, hi if hi > lo else lo + 1)
    for ax, name in zip(axes, names, strict=False):
        hs = list(layers[name])
        picks = sorted({round(i) for i in np.linspace(0, len(hs) - 1, min(6, len(hs)))})
        for i in picks:
            h = hs[i]
            total = h.counts.sum()
            color = cmap(norm(h.x)) if hi > lo else "#1f77b4"
            ax.stairs(h.counts / total if total else h.counts, h.edges, color=color)
        ax.set_title(_short(name), fontsize=9)
        ax.tick_params(labelsize=7)
        ax.locator_params(axis="x", nbins=4)  # tick labels of small values stay apart
    for ax in axes[len(names) :]:
        ax.set_axis_off()
    title = f"{what} histograms per layer (fraction of values per bin)"
    if hi > lo:
        used = axes[: len(names)]  # the colour bar sits next to the drawn panels
        fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=used, label=unit, shrink=0.9)
        title = f"{what} histograms per layer over time (fraction of values per bin)"
    else:
        title += f", at {unit} {lo:.4g}"
    fig.suptitle(title)
    return fig
