"""Check every leaf of an objective and turn the numbers into report rows with verdicts."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from babysit.checks.gradcheck.evaluate import Objective
from babysit.checks.gradcheck.kinks import Decisions
from babysit.checks.gradcheck.leaf import (
    KINK_JUMP,
    NOISE_SIGMAS,
    ROUNDOFF_ULPS,
    LeafResult,
    check_leaf,
)
from babysit.checks.gradcheck.report import ParamCheck, Scale, coordinate_verdict, worst_of

__all__ = ["AUTO_STEPS", "H_MAX", "TINY", "Settings", "check_objective", "thresholds"]

TINY = 1e-10  # the notes: gradients "roughly 1e-10 and smaller in absolute value" are worrying
H_MAX = 1e-2  # the largest step the round-off rescue grows h to
# h="auto" tries these (the notes' range 1e-4..1e-6; float32 needs larger steps).
AUTO_STEPS = {torch.float64: (1e-5, 1e-4, 1e-6), torch.float32: (1e-3, 1e-2, 1e-4)}
KINK_FRACTION = 0.5  # more than this share of checked items across kinks: "inconclusive"

_FAIL_ADVICE = {
    "data": "the data-loss gradient w.r.t. {name} is wrong: check the backward of what produces "
    "it (raw numbers of the worst coordinate are in the table)",
    "reg": "the regularisation gradient w.r.t. {name} is wrong: check the task's reg_fn",
    "total": "the gradient w.r.t. {name} is wrong: check the backward of what produces it "
    "(raw numbers of the worst coordinate are in the table)",
}


@dataclass(frozen=True)
class Settings:
    """Options every leaf check shares."""

    h: float | str
    count: int
    seed: int
    floor: float
    scale: Scale
    dtype: torch.dtype


def thresholds(st: Settings, **extra: Any) -> dict[str, Any]:
    """The bounds a report was judged by (JSON-able), as ``GradcheckReport.thresholds``."""
    return {
        "dtype": str(st.dtype).removeprefix("torch."),
        "fail": st.scale.fail,
        "warn": st.scale.warn,
        "ok": st.scale.ok,
        "floor": st.floor,
        "roundoff_ulps": ROUNDOFF_ULPS,
        "noise_sigmas": NOISE_SIGMAS,
        "kink_jump": KINK_JUMP,
        "inconclusive_kink_fraction": KINK_FRACTION,
        "tiny": TINY,
        "h": st.h,
        "coords_per_param": st.count,
        "seed": st.seed,
        **extra,
    }


def check_objective(
    obj: Objective,
    *,
    part: str,
    stage: str,
    st: Settings,
    warnings: list[str],
    analytic: list[Tensor] | None = None,
) -> tuple[list[ParamCheck], list[Tensor], Decisions]:
    """Rows for every leaf of ``obj``, its analytic gradients, and the base kink decisions.

    ``analytic``: the gradients to check (default: autograd of the objective).
    """
    grads = obj.gradients() if analytic is None else [g.detach() for g in analytic]
    maxes = [float(g.abs().max()) if g.numel() else 0.0 for g in grads]
    g_all = max(maxes, default=0.0)
    if 0 < g_all < TINY:
        # The notes: scale the loss so gradients sit near 1, where floats are dense.
        exponent = -math.floor(math.log2(g_all))
        obj.scale = 2.0**exponent
        grads = [g * obj.scale for g in grads]
        maxes = [x * obj.scale for x in maxes]
        warnings.append(
            f"{stage}/{part}: gradients are tiny (max |grad| {g_all:.1e} < {TINY:.0e}); "
            f"the loss was scaled by 2**{exponent} for the check"
        )
    base = obj.recorded()
    rows = []
    for k, (name, g) in enumerate(zip(obj.names, grads, strict=True)):
        label = f"{stage}/{part}/{name}"
        result = _best_step(obj, k, g, maxes[k] / obj.scale, base, st, warnings, label)
        rows.append(_summarize(name, tuple(g.shape), part, stage, result, st.scale, obj.scale))
    return rows, [g / obj.scale for g in grads], base[1]


def _best_step(
    obj: Objective,
    k: int,
    g: Tensor,
    g_max: float,
    base: tuple[float, Decisions],
    st: Settings,
    warnings: list[str],
    label: str,
) -> LeafResult:
    """Check at h (or each auto step, keeping the smallest error), then enlarge h while round-off
    dominates (the notes: "if round-off still dominates, enlarge h")."""

    def at(h: float) -> LeafResult:
        return check_leaf(
            obj, k, g, base, h=h, count=st.count, seed=st.seed, floor_rel=st.floor,
            ok=st.scale.ok, warn=st.scale.warn,
        )  # fmt: skip

    steps = AUTO_STEPS[st.dtype] if st.h == "auto" else (float(st.h),)
    best = min((at(h) for h in steps), key=lambda r: r.max_error)
    if 0 < g_max * obj.scale < TINY:  # tiny even after the loss scaling
        warnings.append(f"{label}: gradient is tiny (max |grad| {g_max:.1e} < {TINY:.0e})")
    start = best.h
    while best.dominated and best.h * 10 <= H_MAX * (1 + 1e-9):
        best = at(best.h * 10)
    if best.h != start:
        warnings.append(
            f"{label}: round-off dominated at h={start:.0e} (max |grad| {g_max:.1e}); "
            f"h enlarged to {best.h:.0e}" + (", still dominated" if best.dominated else "")
        )
    return best


def _summarize(
    name: str,
    shape: tuple[int, ...],
    part: str,
    stage: str,
    result: LeafResult,
    scale: Scale,
    loss_scale: float,
) -> ParamCheck:
    """One report row from a leaf's items: worst verdict, kinks, worst raw numbers, advice."""
    items = result.items
    verdict = worst_of([coordinate_verdict(it.error, it.kink, scale) for it in items])
    kinks = sum(it.kink for it in items)
    top = max(items, key=lambda it: (it.error, it.raw))  # ties: the largest raw discrepancy
    worst: dict[str, Any] = {
        "index": top.index,
        "analytic": top.analytic / loss_scale,
        "numeric": top.numeric / loss_scale,
        "h": top.h,
        "rel_error": top.error,
        "raw_rel_error": top.raw,
        "kink": top.kink,
    }
    if top.one_sided is not None:
        worst["one_sided"] = [s / loss_scale for s in top.one_sided]
    advice = ""
    if verdict == "fail":
        advice = _FAIL_ADVICE.get(part, _FAIL_ADVICE["total"]).format(name=name)
    elif kinks > KINK_FRACTION * len(items):
        verdict = "inconclusive"
        advice = (
            f"{kinks} of {len(items)} checks crossed a kink: check with fewer datapoints "
            "(datapoints=1) or a smaller h (h=1e-6)"
        )
    elif result.dominated:
        verdict = "inconclusive"
        advice = (
            f"round-off hides this gradient even at h={result.h:.0e}: check it with a loss "
            "in which it is larger (fewer terms averaged, a larger regularisation strength)"
        )
    elif verdict == "warn":
        advice = (
            f"relative error {top.error:.1e} where no kink was crossed is uncomfortable "
            "(the notes): look at the raw numbers, try h='auto'"
        )
    return ParamCheck(
        name=name,
        shape=shape,
        part=part,
        checked=len(items),
        max_rel_error=max(it.error for it in items),
        kinks=kinks,
        verdict=verdict,
        worst=worst,
        stage=stage,
        h=result.h,
        advice=advice,
    )
