"""Coarse -> fine: the next stage's ranges and the border warnings, as pure functions.

The notes: "first search in coarse ranges (e.g. ``10 ** [-6, 1]``), and then depending on
where the best results are turning up, narrow the range", and "double check that the
final learning rate is not at the edge of this interval, or otherwise you may be missing
more optimal hyperparameter setting beyond the interval". On the ``top_k`` best complete
trials of a stage, for each hyperparameter, with positions ``u`` in [0, 1] across its range
(in log10 space for log ranges):

- **border**: the best trial's ``u``, or the ``u`` of more than half of the top k, within
  ``BORDER`` = 5 % of an end -> a warning ``{param, side, value, low, high}``; the next
  stage moves that end ``EXTEND`` (half the range's width) beyond the border, within the
  key's limits (``Limits``: lr > 0, mu < 1, ...);
- **zoom**: every other end moves in to the top-k span padded by ``MARGIN`` = 10 % of the
  width: ``[min u - MARGIN, max u + MARGIN]`` within the old range, floats rounded outward
  to 3 significant digits, ints to whole numbers; a ``choice`` keeps the choices that appear
  among the top k.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import replace
from typing import Any, Literal

from babysit.tuning.dimensions import Choice, Dimension, Range

__all__ = [
    "BORDER",
    "EXTEND",
    "MARGIN",
    "CompletedTrial",
    "border_warnings",
    "next_stage",
    "top_trials",
    "zoom",
]

BORDER = 0.05  # the outer 5 % of a range (log space for log ranges) is its border
MARGIN = 0.10  # zoom padding around the top-k span, as a fraction of the old width
EXTEND = 0.50  # a border warning moves that end out by this fraction of the old width
SIGNIFICANT = 3  # digits kept when a zoomed float end is rounded (outward)

CompletedTrial = tuple[Mapping[str, Any], float]  # (params by dotted key, score)
Side = Literal["low", "high"]


def top_trials(
    trials: Sequence[CompletedTrial], *, direction: Literal["max", "min"], k: int
) -> list[CompletedTrial]:
    """The ``k`` best complete trials with a finite score, best first."""
    finite = [t for t in trials if math.isfinite(t[1])]
    return sorted(finite, key=lambda t: t[1], reverse=direction == "max")[:k]


def _near(side: Side, u: float) -> bool:
    return u <= BORDER if side == "low" else u >= 1.0 - BORDER


def border_warnings(
    ranges: Mapping[str, Dimension], top: Sequence[CompletedTrial]
) -> list[dict[str, Any]]:
    """Warnings ``{param, side, value, low, high}`` for ranges whose best lie on a border.

    ``top`` is best first. ``value`` is the best trial's value when it lies on that
    border, else the best of the top-k values there.
    """
    warnings: list[dict[str, Any]] = []
    for key, dim in ranges.items():
        values = [params[key] for params, _ in top if key in params]
        if not isinstance(dim, Range) or not values:
            continue
        u = [dim.to_unit(v) for v in values]
        for side in ("low", "high"):
            hits = [v for v, x in zip(values, u, strict=True) if _near(side, x)]
            if _near(side, u[0]) or len(hits) > len(values) / 2:
                warnings.append(
                    {"param": key, "side": side, "value": hits[0], "low": dim.low, "high": dim.high}
                )
    return warnings


def _round_out(x: float, *, up: bool) -> float:
    """``x`` rounded away from the range's inside to SIGNIFICANT digits."""
    if x == 0 or not math.isfinite(x):
        return x
    step = 10.0 ** (math.floor(math.log10(abs(x))) - SIGNIFICANT + 1)
    steps = round(x / step, 9)  # 0.35 - 1e-17 is 0.35, not 0.349
    return float(f"{(math.ceil if up else math.floor)(steps) * step:.{SIGNIFICANT}g}")


def _end(dim: Range, side: Side, u: Sequence[float], extend: bool) -> float:
    """One end of the zoomed range (see the module docstring)."""
    low = side == "low"
    old, sign = (dim.low, -1.0) if low else (dim.high, 1.0)
    if extend:
        end = dim.from_unit((0.0 if low else 1.0) + sign * EXTEND)
    else:
        end = dim.from_unit((min(u) if low else max(u)) + sign * MARGIN)
    if dim.integer:
        end = float(math.floor(end) if low else math.ceil(end))
    else:
        end = _round_out(end, up=not low)
    if not extend:  # zooming never moves an end outward
        end = max(end, old) if low else min(end, old)
    return dim.limits.clip(end, inner=old)


def _zoom_range(dim: Range, values: Sequence[float], extend: Collection[Side]) -> Range:
    u = [dim.to_unit(v) for v in values]
    low, high = (_end(dim, side, u, side in extend) for side in ("low", "high"))
    if dim.integer:  # an end clipped to an open limit may be fractional: round inward
        low, high = math.ceil(low), math.floor(high)
    if not (low < high and low <= min(values) and max(values) <= high):
        return dim  # nothing sensible to zoom to (e.g. one whole number left)
    return replace(dim, low=low, high=high)


def zoom(dim: Dimension, values: Sequence[Any], extend: Collection[Side] = ()) -> Dimension:
    """The next stage's dimension around ``values`` (this key's top-k values)."""
    if not values:
        return dim
    if isinstance(dim, Choice):
        kept = tuple(c for c in dim.choices if any(v == c for v in values))
        return replace(dim, choices=kept) if kept else dim
    return _zoom_range(dim, values, extend)


def next_stage(
    ranges: Mapping[str, Dimension],
    trials: Sequence[CompletedTrial],
    *,
    direction: Literal["max", "min"],
    top_k: int,
) -> tuple[dict[str, Dimension], list[dict[str, Any]]]:
    """(the next stage's ranges, this stage's border warnings) from its complete trials."""
    top = top_trials(trials, direction=direction, k=top_k)
    warnings = border_warnings(ranges, top)
    extend: dict[str, set[Side]] = {}
    for w in warnings:
        extend.setdefault(w["param"], set()).add(w["side"])
    new = {
        key: zoom(dim, [p[key] for p, _ in top if key in p], extend.get(key, set()))
        for key, dim in ranges.items()
    }
    return new, warnings
