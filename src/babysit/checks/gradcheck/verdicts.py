"""Check every leaf of an objective and turn the numbers into report rows with verdicts."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from babysit.checks.gradcheck.evaluate import Objective
from babysit.checks.gradcheck.guards import LossDtypeError
from babysit.checks.gradcheck.kinks import Decisions
from babysit.checks.gradcheck.leaf import (
    KINK_SIGMAS,
    NOISE_SIGMAS,
    NONFINITE,
    RETRY_STEPS,
    ROUNDOFF_ULPS,
    TRUNCATION_SAFETY,
    Item,
    LeafResult,
    check_joint,
    check_leaf,
)
from babysit.checks.gradcheck.probes import SMALL
from babysit.checks.gradcheck.report import VERDICTS, ParamCheck, Scale, worst_of
from babysit.errors import DataError

__all__ = [
    "AUTO_STEPS",
    "H_MAX",
    "INCONCLUSIVE_FRACTION",
    "TINY",
    "ZERO_ULPS",
    "Settings",
    "check_objective",
    "joint_row",
    "thresholds",
]

ZERO_ULPS = 1e3  # |grad| below this many eps of the largest one: round-off of 0, not a value
TINY = 1e-10  # the notes: gradients "roughly 1e-10 and smaller in absolute value" are worrying
H_MAX = 1e-2  # the largest step the round-off rescue grows h to
# h="auto": the nominal step (the notes' range 1e-4..1e-6; float32 needs larger steps); the
# probes above the ok bound are tried at 8x and 1/8 of it anyway.
AUTO_STEPS = {torch.float64: 1e-5, torch.float32: 1e-3}
INCONCLUSIVE_FRACTION = 0.5  # more than this share of probes inconclusive: the row is

_FAIL_ADVICE = {
    "data": "the data-loss gradient w.r.t. {name} is wrong: check the backward of what produces "
    "it (raw numbers of the worst probe are in the table)",
    "reg": "the regularisation gradient w.r.t. {name} is wrong: check the task's reg_fn",
    "total": "the gradient w.r.t. {name} is wrong: check the backward of what produces it "
    "(raw numbers of the worst probe are in the table)",
}


@dataclass(frozen=True)
class Settings:
    """Options every leaf check shares; ``lazy``: coordinates only where directions did not
    settle a leaf (models), else every probe (``gradcheck_fn``)."""

    h: float | str
    count: int
    seed: int
    floor: float
    scale: Scale
    dtype: torch.dtype
    lazy: bool = True

    @property
    def step(self) -> float:
        return AUTO_STEPS[self.dtype] if self.h == "auto" else float(self.h)


def thresholds(st: Settings, **extra: Any) -> dict[str, Any]:
    """The bounds a report was judged by (JSON-able), as ``GradcheckReport.thresholds``."""
    return {
        "dtype": str(st.dtype).removeprefix("torch."),
        "fail": st.scale.fail,
        "ok": st.scale.ok,
        "floor": st.floor,
        "roundoff_ulps": ROUNDOFF_ULPS,
        "noise_sigmas": NOISE_SIGMAS,
        "kink_sigmas": KINK_SIGMAS,
        "truncation_safety": TRUNCATION_SAFETY,
        "retry_steps": list(RETRY_STEPS),
        "small_entries": SMALL,
        "inconclusive_fraction": INCONCLUSIVE_FRACTION,
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
    """Rows for every leaf of ``obj``, its analytic gradients, and the base kink decisions
    (recorded with their ties). ``analytic``: the gradients to check (default: autograd)."""
    grads, base = prepare(obj, part=part, stage=stage, warnings=warnings, analytic=analytic)
    maxes = [float(g.abs().max()) if g.numel() else 0.0 for g in grads]
    rows = []
    for k, (name, g) in enumerate(zip(obj.names, grads, strict=True)):
        label = f"{stage}/{part}/{name}"
        # a gradient at the round-off of the gradient computation: zero, not tiny
        zero = maxes[k] <= ZERO_ULPS * obj.eps * max(maxes)
        result = _best_step(obj, k, g, maxes[k] / obj.scale, base, st, warnings, label, zero)
        rows.append(_summarize(name, tuple(g.shape), part, stage, result, st.scale, obj.scale))
    return rows, [g / obj.scale for g in grads], base[1]


def prepare(
    obj: Objective,
    *,
    part: str,
    stage: str,
    warnings: list[str],
    analytic: list[Tensor] | None = None,
) -> tuple[list[Tensor], tuple[float, Decisions]]:
    """Analytic gradients (the loss scaled by a power of two when they are tiny) and the base
    point (value, decisions with ties); a forward whose value changes from one call to the
    next at the same point is refused."""
    if analytic is None:
        first, grads = obj.gradients()
    else:
        first, grads = obj.value(), [g.detach() for g in analytic]
    g_all = max((float(g.abs().max()) for g in grads if g.numel()), default=0.0)
    if 0 < g_all < TINY:
        # The notes: scale the loss so gradients sit near 1, where floats are dense.
        exponent = -math.floor(math.log2(g_all))
        obj.scale = 2.0**exponent
        grads = [g * obj.scale for g in grads]
        first *= obj.scale
        warnings.append(
            f"{stage}/{part}: gradients are tiny (max |grad| {g_all:.1e} < {TINY:.0e}); "
            f"the loss was scaled by 2**{exponent} for the check"
        )
    base = obj.recorded(ties=True)
    dtype = obj.leaves[0].dtype
    if obj.loss_dtype is not None and obj.loss_dtype.is_floating_point and obj.loss_dtype != dtype:
        raise LossDtypeError(obj.loss_dtype)
    eps = obj.eps
    if math.isfinite(first) and abs(base[0] - first) > 64 * eps * max(abs(first), 1e-300):
        again = obj.value()
        if again != base[0]:
            raise DataError(
                f"gradcheck: the loss at the same point changed between calls ({first!r}, "
                f"{base[0]!r}, {again!r}): the forward changes state (a buffer updated by each "
                "call, randomness not drawn from torch's generator); a gradient check needs "
                "the loss to be a function of what it checks"
            )
    return grads, base


def _best_step(
    obj: Objective,
    k: int,
    g: Tensor,
    g_max: float,
    base: tuple[float, Decisions],
    st: Settings,
    warnings: list[str],
    label: str,
    zero: bool = False,
) -> LeafResult:
    """Check at the nominal step, then enlarge h while round-off dominates (the notes: "if
    round-off still dominates, enlarge h") -- only for a gradient tiny next to the loss.
    ``zero``: the analytic gradient is round-off of 0; if the numeric one is within its
    round-off of 0 too, both say the loss does not depend on the tensor: no larger step."""

    def at(h: float) -> LeafResult:
        return check_leaf(
            obj, k, g, base, h=h, count=st.count, seed=st.seed, floor=st.floor,
            scale=st.scale, lazy=st.lazy,
        )  # fmt: skip

    best = at(st.step)
    if 0 < g_max * obj.scale < TINY:  # tiny even after the loss scaling
        warnings.append(f"{label}: gradient is tiny (max |grad| {g_max:.1e} < {TINY:.0e})")
    if all(it.analytic == 0 == it.numeric for it in best.items):
        best.dominated = False  # not used by this loss at all (a bias in an L2 on weights)
    start = best.h
    if best.dominated and best.h < H_MAX and not (zero and _zero(best)):
        # Round-off falls as 1/h: one step to where it would sit under the fail bound
        # (a gradient that is zero, or nearly, goes straight to H_MAX).
        best = at(min(H_MAX, best.h * best.need))
    if best.dominated and _zero(best):
        warnings.append(
            f"{label}: the gradient is zero to round-off, analytically and numerically (max "
            f"|grad| {g_max:.1e}; |numeric| within round-off at h={best.h:.0e}): the loss does "
            "not depend on this tensor here, e.g. a bias followed by a normalisation over the "
            "batch (its mean is subtracted)"
        )
        best.dominated = False
    elif best.h != start:
        warnings.append(
            f"{label}: gradient tiny next to the loss's round-off at h={start:.0e} (max |grad| "
            f"{g_max:.1e}); h enlarged to {best.h:.0e}"
            + (", still hidden" if best.dominated else "")
        )
    return best


def _zero(result: LeafResult) -> bool:
    """Every probe's analytic and numeric values lie within its round-off of 0."""
    return all(
        abs(it.analytic) <= it.roundoff and abs(it.numeric) <= it.roundoff for it in result.items
    )


def joint_row(
    obj: Objective, part: str, stage: str, st: Settings, warnings: list[str], samples: int
) -> ParamCheck:
    """The whole batch's row: one direction over every leaf, every sample."""
    grads, base = prepare(obj, part=part, stage=stage, warnings=warnings)
    result = check_joint(obj, grads, base, h=st.step, seed=st.seed, scale=st.scale)
    if result.dominated and _zero(result):
        result.dominated = False  # nothing depends on the parameters: 0 = 0
    return _summarize("whole batch", (samples,), part, stage, result, st.scale, obj.scale)


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
    stuck = sum(it.verdict == "inconclusive" for it in items)
    judged = [it for it in items if it.verdict != "inconclusive"] or items
    verdict = worst_of([it.verdict for it in judged])  # "inconclusive" only if all are
    advice = ""
    if verdict == "fail":
        bad = next(it for it in items if it.verdict == "fail")
        advice = _FAIL_ADVICE.get(part, _FAIL_ADVICE["total"]).format(name=name)
        if bad.note == NONFINITE:
            advice = f"{NONFINITE} (analytic {bad.analytic:.3g}, numeric {bad.numeric:.3g})"
    elif stuck > INCONCLUSIVE_FRACTION * len(items) or verdict == "inconclusive":
        verdict = "inconclusive"
        advice = (
            f"{stuck} of {len(items)} checks sit on a kink exactly at the checked point (ties: "
            "equal values in a max-pool window, relu inputs of exactly 0, as flat image "
            "backgrounds, zero biases and padding give) and the analytic value is not between "
            "the one-sided slopes: check on other datapoints, or after burn_in_steps"
        )
    elif result.dominated:
        verdict = "inconclusive"
        advice = (
            f"round-off hides this gradient even at h={result.h:.0e}: check it with a loss "
            "in which it is larger (fewer terms averaged, a larger regularisation strength)"
        )
    elif verdict == "warn":
        worst = max(it.error for it in judged)
        advice = (
            f"relative error {worst:.1e} beyond what the measured round-off and truncation "
            "explain, at every step tried: a small but real discrepancy (a constant that "
            "differs between forward and backward?); look at the raw numbers"
        )
    pool = items if verdict == "inconclusive" else judged
    top = max(pool, key=lambda it: (VERDICTS.index(it.verdict), it.error, it.raw))
    return ParamCheck(
        name=name,
        shape=shape,
        part=part,
        checked=len(items),
        max_rel_error=max(it.error for it in judged),
        kinks=sum(it.kink for it in items),
        verdict=verdict,
        worst=_worst(top, loss_scale),
        stage=stage,
        h=result.h,
        advice=advice,
    )


def _worst(it: Item, loss_scale: float) -> dict[str, Any]:
    worst: dict[str, Any] = {
        "index": it.index,
        "analytic": it.analytic / loss_scale,
        "numeric": it.numeric / loss_scale,
        "h": it.h,
        "rel_error": it.error,
        "raw_rel_error": it.raw,
        "kink": it.kink,
        "verdict": it.verdict,
    }
    if it.note:
        worst["note"] = it.note
    if it.one_sided is not None:
        worst["one_sided"] = [s / loss_scale for s in it.one_sided]
    return worst
