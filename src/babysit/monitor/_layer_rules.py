"""Diagnoses from the per-layer probes: activations (dead, saturated) and gradient norms.

Layer findings are warnings when the latest probe shows them; a problem that only the first
probe showed (at initialisation) and training has since fixed is reported as info. Each
warning says (``evidence["at_init"]``) whether the first probe showed it too: units that died
during training point at the learning rate, units dead from the start at the init.
"""

from __future__ import annotations

import math
from typing import Any

from babysit.monitor._findings import Finding, diagnosis
from babysit.monitor._format import share, times
from babysit.monitor._history import ProbeHistory, RunHistory
from babysit.monitor._readings import latest_loss, reference
from babysit.monitor.probes import ACT_STATS, GRAD_NORM

__all__ = ["gradient_shrink"]

INIT_ADVICE = "He init for ReLU, Xavier for tanh / sigmoid"


def _readings(history: ProbeHistory | None) -> list[tuple[int, dict[str, Any], str, str]]:
    """(step, values, severity, when): the latest probe (a warning), then the first (info).

    A problem only the first probe showed was there at initialisation and training fixed it.
    """
    if history is None:
        return []
    (last_step, last), (first_step, first) = history.last, history.first
    recovered = " at initialisation (since recovered)"
    return [(last_step, last, "warning", ""), (first_step, first, "info", recovered)]


def _over(values: dict[str, Any], key: str, limit: float) -> dict[str, float]:
    return {
        name: float(v[key])
        for name, v in values.items()
        if isinstance(v, dict) and isinstance(v.get(key), int | float) and v[key] > limit
    }


def _learning(m: RunHistory, fitted: float) -> bool:
    """The latest loss is below ``fitted`` x chance: the net learns despite what a probe saw."""
    ref, latest = reference(m), latest_loss(m)
    return ref is not None and latest is not None and latest < fitted * ref[0]


def _act_stat_findings(
    m: RunHistory, code: str, key: str, limit: float, what: str, advice: str, fitted: float
) -> list[Finding]:
    """Layers whose act_stats ``key`` exceeds ``limit``: in the latest probe, else the first.

    Units that went bad during training (not at init) while the loss still fell below
    ``fitted`` x chance are info: the rest of the layer carries the fit.
    """
    history = m.probes.get(ACT_STATS)
    for step, values, severity, when in _readings(history):
        bad = _over(values, key, limit)
        if bad:
            assert history is not None
            at_init = bool(_over(history.first[1], key, limit))
            layers = ", ".join(f"{name} {share(v)}" for name, v in bad.items())
            msg = f"{what}{when}: {layers}"
            if not at_init:
                msg += " (since training began)"
                if _learning(m, fitted):
                    severity, msg = "info", msg + "; the loss still fell, the rest carry the fit"
            evidence = {"layers": bad, "at_init": at_init}
            return [Finding(code, severity, step, msg, advice, evidence)]
    return []


@diagnosis("dead_relu")
def dead_relu(m: RunHistory, *, dead: float = 0.5, fitted: float = 0.5) -> list[Finding]:
    """More than ``dead`` of a ReLU layer's units never active over a capture window."""
    advice = (
        f"dead units get no gradient: use {INIT_ADVICE}, bias init >= 0, a lower lr, or leaky ReLU"
    )
    what = "ReLU units never active"
    return _act_stat_findings(m, "dead_relu", "dead", dead, what, advice, fitted)


@diagnosis("saturation")
def saturation(m: RunHistory, *, saturated: float = 0.3, fitted: float = 0.5) -> list[Finding]:
    """More than ``saturated`` of a tanh / sigmoid layer's outputs beyond 0.95 of the range
    (a healthy layer has a few percent there: its units sit in the slope)."""
    advice = (
        f"saturated units pass almost no gradient: smaller init ({INIT_ADVICE}), normalised inputs"
    )
    what = "saturated tanh/sigmoid outputs"
    return _act_stat_findings(m, "saturation", "saturated", saturated, what, advice, fitted)


def gradient_shrink(values: dict[str, Any]) -> tuple[float, int] | None:
    """``(g_1 / g_L, L)``: how much the output-gradient norms grow from the last hidden layer
    back to the first, over L layers.

    g_1..g_L: ``||dL/dy||`` of the Linear / Conv layers before the output layer, in forward
    order (the output layer is left out: its small init scale would read as a shrink).
    < 1: gradients shrink toward the input. None for fewer than 2 such layers or no gradient
    at the last one.
    """
    norms = [float(v) for v in values.values() if isinstance(v, int | float)][:-1]
    if len(norms) < 2 or not all(math.isfinite(g) for g in norms) or norms[-1] <= 0:
        return None
    return norms[0] / norms[-1], len(norms)


def _gradient_findings(
    m: RunHistory, code: str, test: Any, what: str, advice: str
) -> list[Finding]:
    history = m.probes.get(GRAD_NORM)
    for step, values, severity, when in _readings(history):
        got = gradient_shrink(values)
        if got is not None and test(*got):
            total, layers = got
            factor = 1 / total if total < 1 else total  # > 1 either way, for the message
            per_layer = total ** (1 / (layers - 1))
            assert history is not None
            first = gradient_shrink(history.first[1])
            msg = (
                f"gradients {what} {times(factor)} across {layers} layers toward the input"
                f" ({times(factor ** (1 / (layers - 1)))} per layer){when}"
            )
            evidence = {
                "total": total,
                "per_layer": per_layer,
                "at_init": first is not None and test(*first),
                GRAD_NORM: values,
            }
            return [Finding(code, severity, step, msg, advice, evidence)]
    return []


@diagnosis("vanishing_gradients")
def vanishing_gradients(
    m: RunHistory, *, total: float = 1e-3, per_layer: float = 0.1
) -> list[Finding]:
    """Output-gradient norms shrink toward the input by more than 1/``total`` over the whole
    depth (a deep net shrinking a few x per layer compounds to this), or by more than
    1/``per_layer`` per layer."""
    advice = (
        f"check the init scale ({INIT_ADVICE}), use ReLU rather than sigmoid / tanh in deep"
        " nets, or add normalisation layers / residual connections"
    )

    def test(shrink: float, layers: int) -> bool:
        return shrink < total or shrink ** (1 / (layers - 1)) < per_layer

    return _gradient_findings(m, "vanishing_gradients", test, "shrink", advice)


@diagnosis("exploding_gradients")
def exploding_gradients(
    m: RunHistory, *, total: float = 1e3, per_layer: float = 10.0
) -> list[Finding]:
    """Output-gradient norms grow toward the input by more than ``total`` over the depth, or
    by more than ``per_layer`` per layer."""
    advice = f"lower the init scale ({INIT_ADVICE}) or the learning rate, or clip gradients"

    def test(growth: float, layers: int) -> bool:
        return growth > total or growth ** (1 / (layers - 1)) > per_layer

    return _gradient_findings(m, "exploding_gradients", test, "grow", advice)
