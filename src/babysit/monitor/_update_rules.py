"""Diagnoses from what each optimizer step does: update sizes, weight norms, stale gradients.

- update_ratio_high / update_ratio_low: the notes' ~1e-3 update:weight ratio, one finding per
  direction listing the tensors beyond the band (a symmetric decade around 1e-3). They are
  symptoms: ``_ranking`` drops them when a cause that explains them is present.
- grads_not_zeroed: ``.grad`` still holds the last step's gradient when the next backward
  pass starts (``optimizer.zero_grad()`` never runs), read by the ``grad_carryover`` probe.
- reg_too_strong: the weights shrink to a fraction of their initial norm while the loss
  stalls: the penalty (the optimizer's ``weight_decay``, AdamW's decoupled one, an L2 term in
  the loss, or babysit's ``train.reg``) outweighs the data.
- frozen_parameters (info): tensors that never get a gradient, left out of the ratios.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable

from babysit.monitor._curve_rules import MIN_POINTS
from babysit.monitor._findings import Finding, diagnosis
from babysit.monitor._format import num, share, times
from babysit.monitor._history import RunHistory
from babysit.monitor._readings import chance_accuracy, chunk_medians, layer_ratios, series
from babysit.monitor.probes import GRAD_CARRYOVER, UPDATE_RATIO, UPDATE_RATIO_TARGET, WEIGHT_NORM

__all__: list[str] = []

TARGET = num(UPDATE_RATIO_TARGET)  # "0.001"


def _listed(values: dict[str, float], limit: int = 6) -> str:
    shown = ", ".join(f"{name} {num(v, 2)}" for name, v in list(values.items())[:limit])
    return shown + (f" and {len(values) - limit} more" if len(values) > limit else "")


def _ratio_finding(
    m: RunHistory, code: str, *, late: bool, beyond: Callable[[float], bool], direction: str
) -> list[Finding]:
    """One finding for the tensors whose ratio is beyond the band, when they are most of them."""
    ratios, steps = layer_ratios(m, UPDATE_RATIO, late=late)
    bad = {name: r for name, r in ratios.items() if beyond(r)}
    if not ratios or 2 * len(bad) <= len(ratios):
        return []
    when = "in the second half of the run" if late else "in the first half of the run"
    verb = "lower" if direction == "above" else "raise"
    return [
        Finding(
            code,
            "warning",
            steps[-1] if steps else m.last_step,
            f"updates are far {direction} the notes' ~{TARGET} of the weights {when}:"
            f" {_listed(bad)}",
            f"{verb} the learning rate: updates should be about {TARGET} of the weights",
            {"ratios": bad, "tensors": len(ratios), "steps": steps},
        )
    ]


@diagnosis("update_ratio_high")
def update_ratio_high(m: RunHistory, *, high: float = 10 * UPDATE_RATIO_TARGET) -> list[Finding]:
    """Most weight tensors' update:weight ratio above ``high`` (10x ~1e-3) in the second half.

    Late, because adaptive rules (Adam, RMSProp) move every weight by about lr at first: a
    healthy small net sees ~1e-2 for its first steps; a too-high lr keeps it there.
    """
    return _ratio_finding(
        m, "update_ratio_high", late=True, beyond=lambda r: r > high, direction="above"
    )


@diagnosis("update_ratio_low")
def update_ratio_low(m: RunHistory, *, low: float = UPDATE_RATIO_TARGET / 10) -> list[Finding]:
    """Most weight tensors' update:weight ratio below ``low`` (1e-3 / 10) in the first half.

    Early, because a decaying lr or a converged run rightly shrinks the ratio later on.
    """
    return _ratio_finding(
        m, "update_ratio_low", late=False, beyond=lambda r: r < low, direction="below"
    )


@diagnosis("grads_not_zeroed")
def grads_not_zeroed(m: RunHistory, *, stale: float = 0.5) -> list[Finding]:
    """``.grad`` held more than ``stale`` of the last step's gradient when the next backward
    pass began (median over the tensors, in most readings): gradients add up across steps."""
    history = m.probes.get(GRAD_CARRYOVER)
    if history is None:
        return []
    readings = [history.first, *history.latest]
    medians = [
        statistics.median(vs)
        for _, values in readings
        if (vs := [float(v) for v in values.values() if isinstance(v, int | float)])
    ]
    stuck = [x for x in medians if x > stale]
    if not medians or 2 * len(stuck) <= len(medians):
        return []
    return [
        Finding(
            "grads_not_zeroed",
            "error",
            readings[0][0],
            f"gradients are never zeroed: when a backward pass starts, .grad still holds"
            f" {share(statistics.median(stuck))} of the last step's gradient (in"
            f" {len(stuck)} of {len(medians)} readings), so every step adds to the sum of all"
            " earlier gradients",
            "call optimizer.zero_grad() once per step, before loss.backward() (to accumulate"
            " over micro-batches on purpose, zero right after each optimizer.step())",
            {"carryover": statistics.median(stuck), "readings": len(medians)},
        )
    ]


def _norm_ratio(m: RunHistory) -> float | None:
    """Median over weight tensors of ||w|| now / ||w|| at the first reading."""
    history = m.probes.get(WEIGHT_NORM)
    if history is None or not history.latest:
        return None
    first, last = history.first[1], history.last[1]
    ratios = [
        float(last[k]) / float(v)
        for k, v in first.items()
        if isinstance(v, int | float) and v > 0 and isinstance(last.get(k), int | float)
    ]
    return statistics.median(ratios) if ratios else None


@diagnosis("reg_too_strong")
def reg_too_strong(
    m: RunHistory,
    *,
    shrunk: float = 0.5,
    stalled: float = 0.1,
    dominant: float = 0.5,
    fitted: float = 0.1,
) -> list[Finding]:
    """The penalty outweighs the data: the weights shrank below ``shrunk`` x their initial
    norm (median over tensors) while learning stalled (the second half of the curve gave less
    than ``stalled`` of its drop, or val accuracy at chance); or babysit's logged reg_loss is
    more than ``dominant`` of the loss at the end while the data loss stays above ``fitted``
    x the initial loss."""
    if len(m.curve) < MIN_POINTS or m.nonfinite is not None:
        return []
    c = chunk_medians(m.curve.values, 10)
    drop = c[0] - c[-1]
    stall = drop <= 0 or c[5] - c[9] < stalled * drop
    va, chance = series(m, "val_acc"), chance_accuracy(m)
    at_chance = bool(va) and chance is not None and max(va[-3:]) < 1.5 * chance
    ratio = _norm_ratio(m)
    reg = statistics.median(m.reg_share) if m.reg_share else None
    source = (
        f"weight_decay={num(m.weight_decay)} in the {m.optimizer} optimizer"
        if m.weight_decay
        else "the L2 / weight-decay penalty"
    )
    evidence = {"weight_norm_ratio": ratio, "reg_share": reg, "weight_decay": m.weight_decay}
    if ratio is not None and ratio < shrunk and (stall or at_chance):
        msg = (
            f"the weights shrank {times(1 / ratio)} from their initial norm while learning"
            f" stalled (loss {num(c[-1])}): {source} outweighs the data"
        )
    elif reg is not None and reg > dominant and stall and c[-1] * (1 - reg) > fitted * c[0]:
        # the data loss still high: a run that fitted its data (data loss near 0) leaves a
        # small penalty most of a small loss, and has learned, not stalled
        msg = f"the regularisation is {share(reg)} of the loss while learning stalled ({source})"
    else:
        return []
    return [
        Finding(
            "reg_too_strong",
            "warning",
            m.last_step,
            msg,
            "lower the regularization strength (weight decay / L2) by 10x or more: the notes"
            " search it on a log scale, e.g. 10 ** uniform(-6, 1)",
            evidence,
        )
    ]


@diagnosis("frozen_parameters")
def frozen_parameters(m: RunHistory) -> list[Finding]:
    """Info: parameters frozen with requires_grad=False, or held by the optimizer but never
    given a gradient (not reached by the loss); their update ratios are not judged."""
    names = list(dict.fromkeys([*m.frozen, *m.no_grad]))
    if not names:
        return []
    shown = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
    return [
        Finding(
            "frozen_parameters",
            "info",
            None,
            f"{len(names)} parameter tensors get no gradient (frozen or unused): {shown}",
            "nothing to do if they are frozen on purpose; otherwise check requires_grad and"
            " that the forward pass uses them",
            {"params": names},
        )
    ]
