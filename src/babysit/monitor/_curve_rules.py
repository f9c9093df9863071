"""Diagnoses from the loss curve (the notes' first plot) and the update sizes behind it.

The loss is read as the notes' cartoon does: NaN (diverged), exploding, bouncing back up, or a
fast drop that then stalls while the updates stay large (lr too high); nearly linear and slow,
with tiny updates (lr too low); wiggling batch to batch far more than its level (batch too
small); still at chance after an epoch (not learning, a symptom whose cause other rules name).
The reference "chance" is the chance loss given to ``watch()``, else the initial loss; every
message says which.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from babysit.monitor._findings import Finding, diagnosis
from babysit.monitor._format import num, share, times
from babysit.monitor._history import RunHistory
from babysit.monitor._readings import (
    chunk_medians,
    latest_loss,
    layer_ratios,
    noise_level,
    probe_median,
    reference,
)
from babysit.monitor.probes import GRAD_NORM, UPDATE_RATIO, UPDATE_RATIO_TARGET

__all__ = ["MIN_POINTS"]

MIN_POINTS = 20  # fewer logged steps than this: the curve's shape says nothing yet
LOWER = "lower the learning rate (3-10x)"
RAISE = "raise the learning rate (3-10x)"


def _lead_up(m: RunHistory, step: int | None) -> tuple[str, dict[str, float | None]]:
    """What led to a divergence at ``step``: the lr, the loss before it, gradient-norm growth."""
    losses = list(m.recent)
    parts, evidence = [], {"lr": m.lr}
    if m.lr is not None:
        parts.append(f"the learning rate was {num(m.lr)}")
    if len(losses) >= 10:
        low, last = min(chunk_medians(losses, 10)), statistics.median(losses[-5:])
        evidence.update(lowest_loss=low, last_finite_loss=last)
        trend = "had risen to" if last > 1.5 * low else "was"
        parts.append(f"the loss {trend} {num(last)} just before (lowest {num(low)})")
    grads = m.probes.get(GRAD_NORM)
    if grads is not None and step is not None:
        before = [(s, v) for s, v in [grads.first, *grads.latest] if s < step]
        g0 = probe_median(before[0][1]) if len(before) > 1 else None
        g1 = probe_median(before[-1][1]) if len(before) > 1 else None
        if g0 and g1 and g0 > 0:
            evidence["grad_norm_growth"] = g1 / g0
            verb = "grown" if g1 >= g0 else "shrunk"
            parts.append(
                f"gradient norms had {verb} {times(max(g1 / g0, g0 / g1))} since the start"
            )
    return "; ".join(parts), evidence


@diagnosis("diverged")
def diverged(m: RunHistory) -> list[Finding]:
    """A NaN / inf loss (or a "diverged" event): the run is lost from that step on.

    The message says what led to it (the lr, the loss just before, gradient-norm growth);
    every other finding about the wreck is left out (see ``_ranking``).
    """
    if m.nonfinite is None:
        return []
    step, loss = m.nonfinite.get("step"), m.nonfinite.get("loss")
    lead, evidence = _lead_up(m, step)
    return [
        Finding(
            "diverged",
            "error",
            step,
            f"the loss became {loss} at step {step}" + (f": {lead}" if lead else ""),
            "lower the learning rate (10x), check the inputs for NaN/inf and the loss for log(0);"
            " restart from the last good checkpoint",
            {"loss": loss, **evidence},
        )
    ]


@diagnosis("not_learning")
def not_learning(
    m: RunHistory, *, at_chance: float = 0.9, min_epochs: float = 1.0, grown: float = 1.1
) -> list[Finding]:
    """After ``min_epochs`` the loss of the last epoch is still >= ``at_chance`` x chance.

    A symptom: the rules that name a cause (dead units, lr, labels, ...) replace it. A loss
    that grew beyond ``grown`` x its start is exploding (lr_too_high), not stuck.
    """
    ref, start, latest = reference(m), m.initial_loss, latest_loss(m)
    if ref is None or start is None or latest is None or m.nonfinite is not None:
        return []
    if m.epochs_done < min_epochs or not at_chance * ref[0] <= latest <= grown * max(ref[0], start):
        return []
    return [
        Finding(
            "not_learning",
            "error",
            m.last_step,
            f"after {num(m.epochs_done, 3)} epochs the loss {num(latest)} is still at {ref[1]}",
            "check that the gradient flows (gradcheck), that labels match inputs, that the"
            " optimizer holds the model's parameters, and that the learning rate is not tiny",
            {"loss": latest, "reference_loss": ref[0], "epochs": m.epochs_done},
        )
    ]


@diagnosis("lr_too_high")
def lr_too_high(
    m: RunHistory,
    *,
    explode: float = 1.5,
    spikes: float = 6.0,
    rebound: float = 0.15,
    rebound_rel: float = 0.25,
    high: float = 10 * UPDATE_RATIO_TARGET,
    stalled: float = 0.1,
) -> list[Finding]:
    """The loss explodes, bounces back up, or stalls early while the updates stay large.

    On the medians c_0..c_9 of 10 consecutive chunks of the curve:
    exploding -- a running median over 1 % of the logged losses (at least 3) exceeds
    ``explode`` x max(chance, start), or a running median of 3 does and stands ``spikes``
    batch-noise sd above it (a brief blow-up in the first steps, after which units die);
    bouncing -- some c_i exceeds the lowest earlier chunk by ``rebound`` x the drop from the
    initial loss to that low, by ``rebound_rel`` x that low, and by 4 standard errors of a
    chunk median (1.25 sd / sqrt(chunk length), sd the batch-to-batch noise);
    stalled -- the notes' "decays faster, but gets stuck at worse values": the second half
    (c_5 - c_9) gave less than ``stalled`` of the drop from the initial loss while the
    update:weight ratio of the second half is still above ``high`` (10x the notes' ~1e-3, the
    band's upper edge: a healthy run's updates shrink once the first steps are over).
    """
    ref, start, v = reference(m), m.initial_loss, m.curve.values
    if ref is None or start is None or len(v) < MIN_POINTS:
        return []
    advice = (
        f"{LOWER}: with a high learning rate the loss decays fast but gets stuck at a worse"
        " value, bouncing around with too much 'energy'"
    )
    base = max(ref[0], start)
    w = max(3, len(v) // 100)  # sustained over 1 % of the run: one bad batch is not enough
    peak = max(statistics.median(v[i : i + w]) for i in range(len(v) - w + 1))
    spike = max(statistics.median(v[i : i + 3]) for i in range(len(v) - 2))
    sd = noise_level(list(m.recent))  # batch-to-batch noise: a spike must stand far out of it
    if spike > explode * base and spike > base + spikes * sd:
        peak = max(peak, spike)
    c = chunk_medians(v, 10)
    evidence: dict[str, Any] = {"chunk_medians": c, "peak": peak, "reference_loss": ref[0]}
    if peak > explode * base:
        msg = f"the loss grew to {num(peak)}, {times(peak / base)} its start ({num(base)})"
        evidence["shape"] = "exploding"
        return [Finding("lr_too_high", "warning", m.last_step, msg, advice, evidence)]
    rise, low, high_c = max((c[i] - min(c[:i]), min(c[:i]), c[i]) for i in range(1, len(c)))
    chunk = max(len(v) * m.curve.stride / len(c), 1.0)
    se = 1.25 * sd / math.sqrt(chunk)  # of a chunk median
    if rise > rebound * (start - low) and rise > rebound_rel * low and rise > 4 * se:
        msg = f"the loss fell to {num(low)}, then went back up to {num(high_c)}"
        evidence["shape"] = "bouncing"
        return [Finding("lr_too_high", "warning", m.last_step, msg, advice, evidence)]
    late, _ = layer_ratios(m, UPDATE_RATIO, late=True)
    ratio = statistics.median(late.values()) if late else None
    drop = start - c[-1]  # from the very first loss: the fast early drop included
    if ratio is not None and ratio > high and drop > 0 and c[5] - c[9] < stalled * drop:
        msg = (
            f"the loss fell fast to {num(c[4])}, then stalled ({num(c[-1])} at the end) while"
            f" the updates are still {num(ratio, 2)} of the weights (the notes: ~1e-3)"
        )
        evidence.update(late_update_ratio=ratio, shape="stalled")
        return [Finding("lr_too_high", "warning", m.last_step, msg, advice, evidence)]
    return []


@diagnosis("lr_too_low")
def lr_too_low(
    m: RunHistory,
    *,
    min_drop: float = 0.01,
    max_drop: float = 0.9,
    linear: float = 1.5,
    low: float = UPDATE_RATIO_TARGET / 10,
    small_fit: float = 0.5,
    fit: float = 0.3,
) -> list[Finding]:
    """The loss falls slowly and nearly linearly (the notes: "low learning rates ... linear").

    On the initial loss L_0 and the 10 chunk medians c_0..c_9: the drop L_0 - c_9 lies between
    ``min_drop`` and ``max_drop`` x chance and the first half fell less than ``linear`` x the
    second (L_0 - c_4 < linear (c_5 - c_9), c_5 > c_9): no sign of the usual fast-then-slow
    shape (a fast drop in the first steps, then a slow decline, is not linear).
    Or, on the median early update:weight ratio r: r < ``low`` (a decade under the notes'
    ~1e-3) while the loss still falls; or r < ``small_fit`` x 1e-3 while the loss is still
    above ``fit`` x chance (small steps, and the data not fit: the lr holds it back).
    """
    ref = reference(m)
    if ref is None or len(m.curve) < MIN_POINTS or m.nonfinite is not None:
        return []
    c = chunk_medians(m.curve.values, 10)
    start = m.initial_loss if m.initial_loss is not None else c[0]
    drop, first, second = start - c[-1], start - c[4], c[5] - c[9]
    early, _steps = layer_ratios(m, UPDATE_RATIO, late=False)
    ratio = statistics.median(early.values()) if early else None
    evidence = {"chunk_medians": c, "drop": drop, "early_update_ratio": ratio}
    advice = f"{RAISE}: with a low learning rate the improvements are linear"
    if min_drop * ref[0] < drop < max_drop * ref[0] and second > 0 and first < linear * second:
        msg = (
            f"the loss fell only from {num(start)} to {num(c[-1])} ({share(drop / ref[0])} of"
            f" {ref[1]}), at a nearly constant rate"
        )
        return [Finding("lr_too_low", "warning", m.last_step, msg, advice, evidence)]
    small = ratio is not None and ratio < low
    unfit = ratio is not None and ratio < small_fit * UPDATE_RATIO_TARGET and c[-1] > fit * ref[0]
    if (small and second > 0 and drop > min_drop * ref[0]) or unfit:
        assert ratio is not None
        msg = (
            f"the updates are only {num(ratio, 2)} of the weights (the notes: ~1e-3) while the"
            f" loss is still at {num(c[-1])} ({share(c[-1] / ref[0])} of {ref[1]})"
        )
        return [Finding("lr_too_low", "warning", m.last_step, msg, advice, evidence)]
    return []


@diagnosis("loss_noisy")
def loss_noisy(
    m: RunHistory,
    *,
    noisy: float = 0.3,
    floor: float = 0.05,
    max_batch: int = 8,
    min_steps: int = 50,
) -> list[Finding]:
    """Batch-to-batch wiggle that a larger batch would remove.

    The wiggle s is :func:`noise_level` of the second half of the last raw losses (up to 1000),
    against their median level L. Sampling B examples gives s = sd / sqrt(B), sd the spread of
    the per-example losses: whatever the data, a batch of 32 has a sixth of the wiggle of a
    batch of 1, and with classes that overlap sd stays large however long one trains (that
    part is irreducible). So it fires for a batch of at most ``max_batch`` examples (when the
    monitor saw the batch size) whose wiggle is above ``noisy`` x L and ``floor`` x chance (the
    spikes of a loss near 0 do not count).
    """
    ref = reference(m)
    recent = list(m.recent)[len(m.recent) // 2 :]
    if ref is None or len(recent) < min_steps or m.nonfinite is not None:
        return []
    if m.batch_size is not None and m.batch_size > max_batch:
        return []
    noise, level = noise_level(recent), statistics.median(recent)
    if noise <= noisy * level or noise <= floor * ref[0]:
        return []
    batch = f"a batch of {m.batch_size}" if m.batch_size else "the batch size"
    return [
        Finding(
            "loss_noisy",
            "warning",
            m.last_step,
            f"the loss wiggles by {num(noise, 3)} from batch to batch, {share(noise / level)} of"
            f" its level ({num(level)}; {share(noise / ref[0])} of {ref[1]}): {batch} is too"
            " few examples to average over",
            "raise the batch size (the wiggle shrinks as 1 / sqrt(batch size)); lower the"
            " learning rate with it if the loss also bounces up",
            {
                "noise": noise,
                "level": level,
                "reference_loss": ref[0],
                "batch_size": m.batch_size,
                "steps": len(recent),
            },
        )
    ]
