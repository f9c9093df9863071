"""What the rules read off a :class:`RunHistory`: curve summaries, epoch series, probe summaries.

Pure functions of the history (no thresholds here: those are the rules' keyword defaults).
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Sequence
from typing import Any

from babysit.monitor._format import num
from babysit.monitor._history import RunHistory

__all__ = [
    "chance_accuracy",
    "chunk_medians",
    "late_fall",
    "latest_loss",
    "layer_ratios",
    "noise_level",
    "probe_median",
    "reference",
    "series",
]


def chunk_medians(values: Sequence[float], k: int) -> list[float]:
    """Median of each of ``k`` consecutive, nearly equal chunks of ``values``."""
    n = len(values)
    bounds = [round(i * n / k) for i in range(k + 1)]
    return [statistics.median(values[a:b]) for a, b in itertools.pairwise(bounds) if b > a]


def noise_level(values: Sequence[float]) -> float:
    """Batch-to-batch noise: std of successive differences / sqrt(2) (immune to a slow trend)."""
    diffs = [b - a for a, b in itertools.pairwise(values)]
    return statistics.pstdev(diffs) / math.sqrt(2) if len(diffs) > 1 else 0.0


def late_fall(m: RunHistory, k: int = 6) -> tuple[float, float, float]:
    """How much the loss still falls at the end, and how much its noise could fake.

    On the medians c of ``k`` chunks of the curve: ``(c[-3] - c[-1], c[-1], se)`` with
    ``se`` the standard error of a chunk median, 1.25 sd / sqrt(steps per chunk) for the
    batch-to-batch noise sd (:func:`noise_level` of the recent raw losses).
    """
    c = chunk_medians(m.curve.values, k)
    recent = list(m.recent)
    sd = noise_level(recent[len(recent) // 2 :])
    steps = max(len(m.curve) * m.curve.stride / k, 1.0)
    return c[-3] - c[-1], c[-1], 1.25 * sd / math.sqrt(steps)


def reference(m: RunHistory) -> tuple[float, str] | None:
    """The loss at chance and how it is known, e.g. ``(2.303, "chance (2.303)")``.

    The chance loss given to ``watch()`` (ln C for C classes), else the median of the first
    losses (``"the initial loss (2.31)"``): with a small init the two agree.
    """
    if m.chance_loss is not None and m.chance_loss > 0:
        return m.chance_loss, f"chance ({num(m.chance_loss)})"
    start = m.initial_loss
    if start is None or start <= 0:
        return None
    return start, f"the initial loss ({num(start)})"


def chance_accuracy(m: RunHistory) -> float | None:
    """1 / C, with C = round(exp(reference)): a uniform guess over C classes has loss ln C.

    Read from the chance loss, else the initial loss (a near-uniform prediction at init);
    None when that does not look like a classification loss (C < 2).
    """
    ref = reference(m)
    if ref is None or ref[0] > math.log(1000):  # not a classification loss over <= 1000 classes
        return None
    classes = round(math.exp(ref[0]))
    return 1.0 / classes if classes >= 2 else None


def latest_loss(m: RunHistory) -> float | None:
    """Median of the last epoch's batch losses (a quarter of the recent ones if unknown)."""
    per_epoch = int(m.steps_per_epoch) if m.steps_per_epoch else len(m.recent) // 4
    recent = list(m.recent)[-max(per_epoch, 1) :]
    return statistics.median(recent) if recent else None


def series(m: RunHistory, key: str) -> list[float]:
    """The finite values of ``key`` over the epoch records, in order."""
    values = [e.get(key) for e in m.epochs]
    return [float(v) for v in values if isinstance(v, int | float) and math.isfinite(v)]


def layer_ratios(m: RunHistory, probe: str, *, late: bool) -> tuple[dict[str, float], list[int]]:
    """Median value per tensor of a per-tensor probe over one half of the run, and its steps.

    ``late=False``: the first half (the first reading, often tiny output layers' first
    update, left out when there are others); ``late=True``: the second half. Early is where a
    too-low lr shows before a schedule decays it; late is where a too-high one shows once the
    adaptive rules' first large steps are over.
    """
    history = m.probes.get(probe)
    if history is None:
        return {}, []
    later = list(history.latest)
    half = m.last_step / 2
    if late:
        chosen = [r for r in later if r[0] > half] or later[-1:]
    else:
        chosen = [r for r in later if r[0] <= half] or later[:1]
    values: dict[str, list[float]] = {}
    for _, readings in chosen:
        for name, r in readings.items():
            if isinstance(r, int | float) and math.isfinite(r):
                values.setdefault(name, []).append(float(r))
    return {k: statistics.median(v) for k, v in values.items()}, [s for s, _ in chosen]


def probe_median(values: dict[str, Any]) -> float | None:
    """Median over the tensors of one per-tensor reading (finite numbers only)."""
    got = [float(v) for v in values.values() if isinstance(v, int | float) and math.isfinite(v)]
    return statistics.median(got) if got else None
