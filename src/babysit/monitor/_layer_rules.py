"""Diagnoses from the per-layer probes: update:weight ratios, activations, gradient norms.

Layer findings are warnings when the latest probe shows them; a problem that only the first
probe showed (at initialisation) and training has since fixed is reported as info.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from babysit.monitor._findings import Finding, diagnosis
from babysit.monitor._history import ProbeHistory, RunHistory
from babysit.monitor.probes import ACT_STATS, GRAD_NORM, UPDATE_RATIO, UPDATE_RATIO_TARGET

__all__ = ["early_update_ratios", "gradient_factor"]

INIT_ADVICE = "He init for ReLU, Xavier for tanh / sigmoid"
TARGET = f"{UPDATE_RATIO_TARGET:.0e}".replace("e-0", "e-")  # "1e-3"


def early_update_ratios(m: RunHistory) -> tuple[dict[str, float], list[int]]:
    """Median ``||dw|| / ||w||`` per weight tensor over the first half of the run.

    The first probe (the update from the initial weights, often tiny output layers) and
    non-finite ratios are left out. Early, because a decaying lr or a converged run rightly
    shrinks the ratio later on.
    """
    history = m.probes.get(UPDATE_RATIO)
    if history is None:
        return {}, []
    later = list(history.latest)
    early = [r for r in later if r[0] <= m.last_step / 2] or later[:1]
    ratios: dict[str, list[float]] = {}
    for _, values in early:
        for name, r in values.items():
            if isinstance(r, int | float) and math.isfinite(r):
                ratios.setdefault(name, []).append(float(r))
    return {k: statistics.median(v) for k, v in ratios.items()}, [s for s, _ in early]


def _ratio_findings(
    m: RunHistory, code: str, test: Any, direction: str, advice: str
) -> list[Finding]:
    ratios, steps = early_update_ratios(m)
    return [
        Finding(
            code,
            "warning",
            steps[-1],
            f"{name}: updates are {r:.2g} of the weights, far {direction} the notes' ~{TARGET}",
            advice,
            {"param": name, "ratio": r, "steps": steps},
        )
        for name, r in ratios.items()
        if test(r)
    ]


@diagnosis("update_ratio_high")
def update_ratio_high(m: RunHistory, *, high: float = 0.1) -> list[Finding]:
    """A weight tensor whose early update:weight ratio exceeds ``high`` (100x the ~1e-3 target).

    Adaptive rules (Adagrad, RMSProp, Adam) move every weight by about lr at first, so small
    nets see 1e-2 early even when healthy: only 100x over the target is "far above".
    """
    advice = f"lower the learning rate: updates should be about {TARGET} of the weights"
    return _ratio_findings(m, "update_ratio_high", lambda r: r > high, "above", advice)


@diagnosis("update_ratio_low")
def update_ratio_low(m: RunHistory, *, low: float = 1e-4) -> list[Finding]:
    """A weight tensor whose early update:weight ratio is below ``low`` (10x under ~1e-3)."""
    advice = f"raise the learning rate: updates should be about {TARGET} of the weights"
    return _ratio_findings(m, "update_ratio_low", lambda r: r < low, "below", advice)


def _readings(history: ProbeHistory | None) -> list[tuple[int, dict[str, Any], str, str]]:
    """(step, values, severity, when): the latest probe (a warning), then the first (info).

    A problem only the first probe showed was there at initialisation and training fixed it.
    """
    if history is None:
        return []
    (last_step, last), (first_step, first) = history.last, history.first
    recovered = " at initialisation (since recovered)"
    return [(last_step, last, "warning", ""), (first_step, first, "info", recovered)]


def _act_stat_findings(
    m: RunHistory, code: str, key: str, limit: float, what: str, advice: str
) -> list[Finding]:
    """Layers whose act_stats ``key`` exceeds ``limit``: in the latest probe, else the first."""
    for step, values, severity, when in _readings(m.probes.get(ACT_STATS)):
        bad = {
            name: float(v[key])
            for name, v in values.items()
            if isinstance(v, dict) and isinstance(v.get(key), int | float) and v[key] > limit
        }
        if bad:
            layers = ", ".join(f"{name} {v:.0%}" for name, v in bad.items())
            msg = f"{what}{when}: {layers}"
            return [Finding(code, severity, step, msg, advice, {"layers": bad})]
    return []


@diagnosis("dead_relu")
def dead_relu(m: RunHistory, *, dead: float = 0.5) -> list[Finding]:
    """More than ``dead`` of a ReLU layer's units never active over a capture window."""
    advice = (
        f"dead units get no gradient: use {INIT_ADVICE}, bias init >= 0, a lower lr, or leaky ReLU"
    )
    return _act_stat_findings(m, "dead_relu", "dead", dead, "ReLU units never active", advice)


@diagnosis("saturation")
def saturation(m: RunHistory, *, saturated: float = 0.5) -> list[Finding]:
    """More than ``saturated`` of a tanh / sigmoid layer's outputs beyond 0.95 of the range."""
    advice = (
        f"saturated units pass almost no gradient: smaller init ({INIT_ADVICE}), normalised inputs"
    )
    what = "saturated tanh/sigmoid outputs"
    return _act_stat_findings(m, "saturation", "saturated", saturated, what, advice)


def gradient_factor(values: dict[str, Any]) -> float | None:
    """Per-layer factor ``(g_1 / g_L) ** (1 / (L - 1))`` of the output-gradient norms.

    g_1..g_L: ``||dL/dy||`` of the layers before the output layer, in forward order (the
    output layer is left out: its small init scale would read as a shrink). < 1: gradients
    shrink toward the input; None for fewer than 2 such layers or no gradient at the last one.
    """
    norms = [float(v) for v in values.values() if isinstance(v, int | float)][:-1]
    if len(norms) < 2 or not all(math.isfinite(g) for g in norms) or norms[-1] <= 0:
        return None
    return (norms[0] / norms[-1]) ** (1 / (len(norms) - 1))


def _gradient_findings(
    m: RunHistory, code: str, test: Any, what: str, advice: str
) -> list[Finding]:
    for step, values, severity, when in _readings(m.probes.get(GRAD_NORM)):
        factor = gradient_factor(values)
        if factor is not None and test(factor):
            msg = f"gradients {what} {factor:.3g}x per layer toward the input{when}"
            return [
                Finding(code, severity, step, msg, advice, {"factor": factor, GRAD_NORM: values})
            ]
    return []


@diagnosis("vanishing_gradients")
def vanishing_gradients(m: RunHistory, *, factor: float = 0.1) -> list[Finding]:
    """Output-gradient norms shrink by more than 1/``factor`` per layer toward the input."""
    advice = f"check the init scale ({INIT_ADVICE}) and avoid saturating nonlinearities"
    return _gradient_findings(m, "vanishing_gradients", lambda f: f < factor, "shrink", advice)


@diagnosis("exploding_gradients")
def exploding_gradients(m: RunHistory, *, factor: float = 10.0) -> list[Finding]:
    """Output-gradient norms grow by more than ``factor`` per layer toward the input."""
    advice = f"lower the init scale ({INIT_ADVICE}) or the learning rate, or clip gradients"
    return _gradient_findings(m, "exploding_gradients", lambda f: f > factor, "grow", advice)
