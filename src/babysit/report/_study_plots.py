"""The study page's figures: the score against each hyperparameter, the top trials' losses.

The notes: search "on log scale" (so a log range gets a log x axis) and compare runs on a
log-scale loss plot, where their differences show best. Each function takes plain data
and returns a :class:`~matplotlib.figure.Figure` (Agg, no pyplot state).
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from babysit.report import plots
from babysit.report._study_data import Curve, TrialRow

__all__ = [
    "DIVERGED_COLOR",
    "ParamAxis",
    "curves_figure",
    "score_figure",
    "stage_color",
]

DIVERGED_COLOR = "#c62828"
FAILED_COLOR = "#6b7580"
WARN_COLOR = "#b87700"
BOTTOM = 0.03  # where unscored trials are marked, in axes height


def stage_color(stage: int | None) -> str:
    """The colour of a stage's points and range edges (grey when unknown)."""
    return f"C{stage % 10}" if stage is not None else "#7f7f7f"


@dataclass(frozen=True)
class ParamAxis:
    """How to draw one hyperparameter: its scale, choices, and each stage's range edges."""

    name: str
    log: bool = False  # a log range: log x axis (the notes: search on log scale)
    choices: tuple[str, ...] = ()  # a choice: categorical x axis, these labels in order
    edges: list[tuple[int, float, float]] = field(default_factory=list)  # (stage, low, high)
    warning: str | None = None  # a border warning, called out in the title


def _x(axis: ParamAxis, value: Any) -> float | None:
    """Where ``value`` goes on the axis (None: it cannot be drawn there)."""
    if axis.choices:
        label = str(value)
        return float(axis.choices.index(label)) if label in axis.choices else None
    x = float(value) if type(value) in (int, float) else math.nan
    if not math.isfinite(x) or (axis.log and x <= 0):
        return None
    return x


def _scatter(ax: Axes, axis: ParamAxis, trials: Sequence[TrialRow], best: int | None) -> None:
    for stage, low, high in axis.edges:  # earlier stages wider: a shared edge shows both
        lw = max(0.9, 2.6 - 0.6 * stage)
        for edge in (low, high):
            ax.axvline(edge, color=stage_color(stage), ls="--", lw=lw, alpha=0.8)
    bottom = ax.get_xaxis_transform()  # x in data, y in axes: unscored trials sit low
    groups: dict[tuple[str, str], tuple[list[float], list[float]]] = {}
    for t in trials:
        x = _x(axis, t.params.get(axis.name))
        if x is None:
            continue
        kind = t.state if t.state in ("pruned", "diverged") else "complete"
        score = t.score
        kind = kind if score is not None or kind == "diverged" else "unscored"
        color = stage_color(t.stage) if kind in ("complete", "pruned") else ""
        xs, ys = groups.setdefault((kind, color), ([], []))
        xs.append(x)
        ys.append(BOTTOM if score is None else score)
    for (kind, color), (xs, ys) in groups.items():
        if kind == "complete":
            ax.scatter(xs, ys, s=22, color=color, alpha=0.85, lw=0, zorder=3, gid=kind)
        elif kind == "pruned":
            ax.scatter(xs, ys, s=26, fc="none", ec=color, lw=1.2, zorder=3, gid=kind)
        else:  # no score: a cross along the bottom
            cross = DIVERGED_COLOR if kind == "diverged" else FAILED_COLOR
            ax.scatter(xs, ys, s=36, marker="x", color=cross, transform=bottom, zorder=4, gid=kind)
    top = next((t for t in trials if t.number == best), None)
    x = _x(axis, top.params.get(axis.name)) if top is not None else None
    if top is not None and top.score is not None and x is not None:
        ax.scatter([x], [top.score], s=170, marker="*", color="#ffd54f", ec="k", lw=0.8, zorder=5)
    if axis.log:
        ax.set_xscale("log")
    if axis.choices:
        ax.set_xticks(range(len(axis.choices)), [_short(c) for c in axis.choices])
        ax.set_xlim(-0.5, len(axis.choices) - 0.5)


def _short(text: str, limit: int = 14) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _legend(stages: Sequence[str]) -> list[Line2D]:
    """One key per stage (its points and range edges), then the trial markers."""

    def key(marker: str, label: str, **kw: Any) -> Line2D:
        return Line2D([], [], ls=kw.pop("ls", ""), marker=marker, label=label, **kw)

    return [
        *(key("o", label, ls="--", color=stage_color(s)) for s, label in enumerate(stages)),
        key("o", "pruned (last score)", mfc="none", mec=FAILED_COLOR),
        key("x", "diverged (no score)", color=DIVERGED_COLOR),
        key("x", "failed (no score)", color=FAILED_COLOR),
        key("*", "best trial", color="#ffd54f", mec="k", ms=12),
    ]


def score_figure(
    axes_: Sequence[ParamAxis],
    trials: Sequence[TrialRow],
    *,
    metric: str,
    best: int | None,
    stages: Sequence[str] = (),
) -> Figure:
    """One scatter per param: each trial's score against its value, stages' ranges drawn.

    Scored trials are dots coloured by stage (pruned ones hollow, at their last score);
    diverged and failed trials are crosses along the bottom; the best trial is a star;
    dashed lines are each stage's range edges; log ranges get a log x axis. ``stages``:
    a legend label per stage (its colour is :func:`stage_color`).
    """
    ncols = 1 if len(axes_) == 1 else 2
    nrows = math.ceil(len(axes_) / ncols)
    fig, axes = plots.new_figure(nrows, ncols, height=3.3 if ncols == 2 else 3.8)
    for ax, axis in zip(axes, axes_, strict=False):
        _scatter(ax, axis, trials, best)
        ax.set_xlabel(axis.name + (" (log scale)" if axis.log else ""))
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3, which="both")
        if axis.warning is None:
            ax.set_title(axis.name, fontsize=10)
        else:
            text = textwrap.fill(f"{axis.name}: {axis.warning}", 60)
            ax.set_title(text, fontsize=9.5, color=WARN_COLOR, fontweight="bold")
    for ax in axes[len(axes_) :]:
        ax.set_axis_off()
    handles = _legend(stages)
    if len(axes) > len(axes_):  # the key fills the empty panel
        axes[-1].legend(handles=handles, loc="center", fontsize=9, title="key")
    else:
        fig.legend(
            handles=handles, loc="outside lower center", ncol=min(len(handles), 5), fontsize=8
        )
    return fig


def _label(curve: Curve, best: int | None) -> str:
    t = curve.trial
    stage = f" s{t.stage}" if t.stage is not None else ""
    mark = " (best)" if t.number == best else ""
    return f"#{t.number}{stage}: {t.value:.4g}{mark}"


def curves_figure(curves: Sequence[Curve], *, metric: str, best: int | None) -> Figure:
    """The top trials' minibatch losses (smoothed) and validation curves, on log axes.

    Left: each trial's smoothed minibatch loss; right: its validation loss per epoch (or
    its validation score when no loss was logged). The best trial is drawn thickest.
    """
    val_key = "val_loss" if any("val_loss" in c.val for c in curves) else metric
    fig, (left, right) = plots.new_figure(1, 2, height=4.0)
    for i, curve in enumerate(curves):
        color, bold = f"C{i % 10}", curve.trial.number == best
        lw, z = (2.4, 3) if bold else (1.2, 2)  # the best on top
        label = _label(curve, best)
        if curve.loss is not None and len(curve.loss):
            y = plots.smooth(curve.loss)
            y = np.where(y > 0, y, np.nan)  # a log axis
            left.plot(curve.loss.x, y, color=color, lw=lw, zorder=z, label=label)
        val = curve.val.get(val_key)
        if val is not None and len(val):
            y = val.mean if val_key != "val_loss" else np.where(val.mean > 0, val.mean, np.nan)
            right.plot(val.x, y, "o-", ms=3, color=color, lw=lw, zorder=z, label=label)
    unit = next((c.loss.unit for c in curves if c.loss is not None), "epoch")
    name = curves[0].loss_name if curves else "loss"
    left.set_title(f"minibatch {name.replace('_', ' ')}, smoothed (log scale)")
    right.set_title(f"{val_key} per epoch" + (" (log scale)" * (val_key == "val_loss")))
    for ax, xlabel in ((left, unit), (right, "epoch")):
        if ax.get_lines():
            if ax is left or val_key == "val_loss":
                ax.set_yscale("log")
            ax.legend(fontsize=7.5, loc="best")
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3, which="both")
    return fig
