"""The run's figures with matplotlib (Agg, no pyplot state): one function per figure.

(The probes' per-layer figures are in :mod:`babysit.report._probe_plots`.)

Each function takes downsampled series (see :mod:`babysit.report._series`) and returns a
:class:`matplotlib.figure.Figure`; :func:`to_png` renders it. The HTML page embeds the PNGs
and saves them in ``plots/``. The x axis is in epochs whenever the run logged them (the
notes: "the x-axis of the plots below are always in units of epochs").
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from babysit.report._series import Series

__all__ = [
    "LOSS_LABELS",
    "accuracy_figure",
    "averaged_figure",
    "images_figure",
    "loss_figure",
    "new_figure",
    "schedule_figure",
    "smooth",
    "to_png",
]

WIDTH = 10.0  # inches; at 100 dpi a figure is 1000 px wide, the page's content width
EVENT_COLORS = {"diverged": "#c62828", "resumed": "#2e7d32", "early_stop": "#6a1b9a"}
# what each loss is (metrics.jsonl, see monitor.log): only losses of one kind compare
LOSS_LABELS = {
    "loss": "minibatch loss (data + reg)",
    "data_loss": "minibatch data loss",
    "train_loss": "epoch train loss (data only)",
    "val_loss": "epoch val loss (data only)",
}


def new_figure(nrows: int = 1, ncols: int = 1, height: float = 3.6) -> tuple[Figure, list[Axes]]:
    """A page-wide figure of ``nrows`` x ``ncols`` panels, ``height`` inches per row."""
    fig = Figure(figsize=(WIDTH, height * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, [ax for row in axes for ax in row]


def to_png(fig: Figure, *, dpi: int = 100) -> bytes:
    """The figure as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def smooth(series: Series, *, frac: float = 0.025) -> np.ndarray:
    """Centered moving average of the bucket means, weighted by each bucket's finite count.

    Window: ``2k + 1`` buckets with ``k = max(1, round(frac * len(series)))``; shape (B,).
    Buckets with no finite value get NaN weight 0 (a diverged stretch does not poison it).
    """
    n = len(series)
    k = max(1, round(frac * n))
    w = series.count.astype(np.float64)  # (B,)
    v = np.where(w > 0, np.nan_to_num(series.mean) * w, 0.0)  # (B,)
    cw = np.concatenate([[0.0], np.cumsum(w)])  # (B + 1,)
    cv = np.concatenate([[0.0], np.cumsum(v)])
    lo = np.clip(np.arange(n) - k, 0, n)
    hi = np.clip(np.arange(n) + k + 1, 0, n)
    weight = cw[hi] - cw[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(weight > 0, (cv[hi] - cv[lo]) / weight, np.nan)


def _draw_stream(ax: Axes, s: Series, *, label: str, color: str, positive: bool = False) -> None:
    """Bucket means as a thin line, the min-max band shaded when buckets hold several steps."""
    mask = s.count > 0
    if positive:
        mask &= s.lo > 0
    if s.width > 1:
        ax.fill_between(s.x, s.lo, s.hi, where=mask, color=color, alpha=0.18, lw=0)
    ax.plot(s.x, np.where(mask, s.mean, np.nan), color=color, lw=0.7, alpha=0.55, label=label)


def _style(s: Series) -> str:
    """Per-epoch points get markers while they stay legible (up to 60 of them)."""
    return "o-" if len(s) <= 60 else "-"


def _events(ax: Axes, events: Mapping[str, Sequence[float]]) -> None:
    for what, xs in events.items():
        color = EVENT_COLORS.get(what, "#6b7580")
        for i, x in enumerate(xs):
            ax.axvline(x, color=color, ls=":", lw=1.2, label=what if i == 0 else None)


def loss_figure(
    minibatch: Mapping[str, Series],
    *,
    epoch_losses: Mapping[str, Series] | None = None,
    events: Mapping[str, Sequence[float]] | None = None,
) -> Figure:
    """Minibatch losses on linear (left) and log (right) axes, the first one also smoothed.

    minibatch: batch-record losses by field (``data_loss``, ``loss``), the first drawn with
    its smoothed line, the others thin and grey; epoch_losses: per-epoch losses by field
    (``train_loss``, ``val_loss``) drawn as markers; events: x positions of run events
    (diverged, resumed, ...) as dotted vertical lines. Lines are labelled by
    :data:`LOSS_LABELS`, which say what each loss holds.
    """
    fig, (lin, log) = new_figure(1, 2)
    (first, main), *others = minibatch.items()
    smoothed = smooth(main)
    for ax, positive in ((lin, False), (log, True)):
        _draw_stream(ax, main, label=_loss_label(first), color="#1f77b4", positive=positive)
        ys = np.where(smoothed > 0, smoothed, np.nan) if positive else smoothed
        ax.plot(main.x, ys, color="#0b3d91", lw=2.0, label="smoothed")
        for name, s in others:
            _draw_stream(ax, s, label=_loss_label(name), color="#7f7f7f", positive=positive)
        for (name, s), c in zip((epoch_losses or {}).items(), ("#ff7f0e", "#2ca02c"), strict=False):
            ax.plot(s.x, s.mean, _style(s), ms=3.5, lw=1, color=c, label=_loss_label(name))
        _events(ax, events or {})
        ax.set_xlabel(main.unit)
        ax.grid(alpha=0.3)
    lin.set_ylabel("loss")
    lin.set_title("loss (linear)")
    if np.any(main.lo[main.count > 0] > 0):
        log.set_yscale("log")
        log.set_title("loss (log scale)")
    else:
        log.set_title("loss (log scale: no positive values)")
    lin.legend(fontsize=8, loc="upper right")
    return fig


def _loss_label(name: str) -> str:
    return LOSS_LABELS.get(name, name)


def accuracy_figure(metrics: Mapping[str, Series]) -> Figure:
    """Per-epoch train/val metrics; the gap between train and val accuracy is overfitting."""
    fig, (ax,) = new_figure(height=3.4)
    for name, s in metrics.items():
        ax.plot(s.x, s.mean, _style(s), ms=3.5, lw=1.4, label=name)
    unit = next(iter(metrics.values())).unit if metrics else "epoch"
    ax.set_xlabel(unit)
    ax.set_ylabel("score")
    train, val = metrics.get("train_acc"), metrics.get("val_acc")
    if train is not None and val is not None and math.isfinite(train.last - val.last):
        ax.set_title(f"train/val accuracy (last gap train - val = {train.last - val.last:+.3f})")
    else:
        ax.set_title("train/val metrics")
    finite = [s.mean[np.isfinite(s.mean)] for s in metrics.values()]
    if finite and all(v.size and v.min() >= 0 and v.max() <= 1 for v in finite):
        ax.set_ylim(-0.02, 1.02)  # accuracies are fractions in [0, 1]
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def averaged_figure(pairs: Mapping[str, tuple[Series, Series]], kind: str) -> Figure:
    """Per validation quantity (val_acc, val_loss, ...) one panel: raw weights vs averaged."""
    fig, axes = new_figure(1, len(pairs), height=3.2)
    for ax, (key, (raw, avg)) in zip(axes, pairs.items(), strict=True):
        ax.plot(raw.x, raw.mean, _style(raw), ms=3.5, lw=1.4, color="#ff7f0e", label=key)
        ax.plot(
            avg.x, avg.mean, _style(avg), ms=3.5, lw=1.4, color="#0b3d91", label=f"{kind}_{key}"
        )
        ax.set_xlabel(raw.unit)
        ax.set_title(f"{key}: raw vs {kind} weights")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return fig


def schedule_figure(lr: Series | None, mu: Series | None) -> Figure:
    """Learning rate (log axis when positive) and momentum over time."""
    present = [(name, s) for name, s in (("learning rate", lr), ("momentum", mu)) if s is not None]
    fig, axes = new_figure(1, len(present), height=3.0)
    for ax, (name, s) in zip(axes, present, strict=True):
        ax.plot(s.x, s.mean, color="#6a1b9a", lw=1.5)
        if name == "learning rate" and np.all(s.lo[s.count > 0] > 0):
            ax.set_yscale("log")
        ax.set_title(name)
        ax.set_xlabel(s.unit)
        ax.grid(alpha=0.3)
    return fig


def images_figure(images: Sequence[tuple[str, np.ndarray]]) -> Figure:
    """Images the monitor saved (first-layer filter grids), side by side with their times."""
    rows, cols = images[0][1].shape[:2]  # (H, W[, C]): size the figure to the grid's aspect
    height = min(6.0, max(1.5, WIDTH / len(images) * rows / cols + 0.4))
    fig, axes = new_figure(1, len(images), height=height)
    for ax, (label, image) in zip(axes, images, strict=True):
        # a 2-D image is grey levels (the monitor's single-channel filters), not a heat map
        ax.imshow(image, cmap="gray" if image.ndim == 2 else None, interpolation="nearest")
        ax.set_title(label, fontsize=10)
        ax.set_axis_off()
    return fig
