"""Diagnoses from the loss curve and the per-epoch accuracies (the notes' first two plots).

The loss is read as the notes' cartoon does: exploding or stuck high (lr too high), nearly
linear and slow (lr too low), wiggling batch to batch (batch too small), still at chance after
an epoch (not learning). Train/val accuracy: a growing gap is overfitting; low train accuracy
tracked closely by val accuracy is underfitting.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Sequence

from babysit.monitor._findings import Finding, diagnosis
from babysit.monitor._history import RunHistory

__all__ = ["chunk_medians", "noise_level"]

MIN_POINTS = 20  # fewer logged steps than this: the curve's shape says nothing yet


def chunk_medians(values: Sequence[float], k: int) -> list[float]:
    """Median of each of ``k`` consecutive, nearly equal chunks of ``values``."""
    n = len(values)
    bounds = [round(i * n / k) for i in range(k + 1)]
    return [statistics.median(values[a:b]) for a, b in itertools.pairwise(bounds) if b > a]


def noise_level(values: Sequence[float]) -> float:
    """Batch-to-batch noise: std of successive differences / sqrt(2) (immune to a slow trend)."""
    diffs = [b - a for a, b in itertools.pairwise(values)]
    return statistics.pstdev(diffs) / math.sqrt(2) if len(diffs) > 1 else 0.0


@diagnosis("diverged")
def diverged(m: RunHistory) -> list[Finding]:
    """A NaN / inf loss (or a "diverged" event): the run is lost from that step on."""
    if m.nonfinite is None:
        return []
    step, loss = m.nonfinite.get("step"), m.nonfinite.get("loss")
    return [
        Finding(
            "diverged",
            "error",
            step,
            f"the loss became {loss} at step {step}",
            "lower the learning rate (10x), check the inputs for NaN/inf and the loss for log(0);"
            " restart from the last good checkpoint",
            {"loss": loss, "last_finite_loss": m.recent[-1] if m.recent else None},
        )
    ]


@diagnosis("not_learning")
def not_learning(
    m: RunHistory, *, at_chance: float = 0.9, min_epochs: float = 1.0, grown: float = 1.1
) -> list[Finding]:
    """After ``min_epochs`` the loss of the last epoch is still >= ``at_chance`` x chance.

    Chance is the given chance loss (ln C for C classes: 2.302 for 10), else the initial loss.
    A loss that grew beyond ``grown`` x its start is exploding (lr_too_high), not stuck.
    """
    ref, start = m.reference_loss, m.initial_loss
    if ref is None or start is None or ref <= 0 or m.nonfinite is not None:
        return []
    if m.epochs_done < min_epochs:
        return []
    per_epoch = int(m.steps_per_epoch) if m.steps_per_epoch else len(m.recent) // 4
    latest = statistics.median(list(m.recent)[-max(per_epoch, 1) :])
    if not at_chance * ref <= latest <= grown * max(ref, start):
        return []
    return [
        Finding(
            "not_learning",
            "error",
            m.last_step,
            f"after {m.epochs_done:.3g} epochs the loss {latest:.4g} is still at chance"
            f" ({ref:.4g})",
            "check that the gradient flows (gradcheck), that labels match inputs, that the"
            " optimizer holds the model's parameters, and that the learning rate is not tiny",
            {"loss": latest, "chance_loss": ref, "epochs": m.epochs_done},
        )
    ]


@diagnosis("lr_too_high")
def lr_too_high(
    m: RunHistory, *, explode: float = 1.5, rebound: float = 0.05, rebound_rel: float = 0.25
) -> list[Finding]:
    """The loss explodes, or falls and then bounces back up (stuck at a worse value).

    Exploding: a running median of 3 logged losses (one bad batch is not enough) exceeds
    ``explode`` x max(chance, initial loss). Bouncing, on the medians c_0..c_9 of 10
    consecutive chunks of the curve: some c_i exceeds the lowest earlier chunk by more than
    ``rebound`` x chance and by more than ``rebound_rel`` of that low.
    """
    ref, start = m.reference_loss, m.initial_loss
    v = m.curve.values
    if ref is None or start is None or ref <= 0 or len(v) < MIN_POINTS:
        return []
    advice = (
        "lower the learning rate (3-10x): with a high learning rate the loss decays fast but"
        " gets stuck at a worse value, bouncing around with too much 'energy'"
    )
    base = max(ref, start)
    peak = max(statistics.median(v[i : i + 3]) for i in range(len(v) - 2))
    c = chunk_medians(v, 10)
    evidence = {"chunk_medians": c, "peak": peak, "initial_loss": start, "reference_loss": ref}
    if peak > explode * base:
        msg = f"the loss grew to {peak:.4g}, {peak / base:.3g}x its start ({base:.4g})"
        return [Finding("lr_too_high", "warning", m.last_step, msg, advice, evidence)]
    rise, low, high = max((c[i] - min(c[:i]), min(c[:i]), c[i]) for i in range(1, len(c)))
    if rise > rebound * ref and rise > rebound_rel * low:
        msg = f"the loss fell to {low:.4g}, then went back up to {high:.4g}"
        return [Finding("lr_too_high", "warning", m.last_step, msg, advice, evidence)]
    return []


@diagnosis("lr_too_low")
def lr_too_low(
    m: RunHistory, *, min_drop: float = 0.01, max_drop: float = 0.3, linear: float = 1.5
) -> list[Finding]:
    """The loss falls slowly and nearly linearly (the notes: "low learning rates ... linear").

    On the 10 chunk medians c_0..c_9: the total drop c_0 - c_9 lies between ``min_drop`` and
    ``max_drop`` x chance, and the first half fell less than ``linear`` x the second
    (c_0 - c_4 < linear (c_5 - c_9), with c_5 > c_9): no sign of the usual fast-then-slow shape.
    """
    ref = m.reference_loss
    if ref is None or ref <= 0 or len(m.curve) < MIN_POINTS or m.nonfinite is not None:
        return []
    c = chunk_medians(m.curve.values, 10)
    drop, first, second = c[0] - c[-1], c[0] - c[4], c[5] - c[9]
    if not (min_drop * ref < drop < max_drop * ref and second > 0 and first < linear * second):
        return []
    return [
        Finding(
            "lr_too_low",
            "warning",
            m.last_step,
            f"the loss fell only from {c[0]:.4g} to {c[-1]:.4g}, at a nearly constant rate",
            "raise the learning rate (3-10x): with a low learning rate the improvements are linear",
            {
                "chunk_medians": c,
                "drop": drop,
                "first_half_drop": first,
                "second_half_drop": second,
            },
        )
    ]


@diagnosis("loss_noisy")
def loss_noisy(m: RunHistory, *, noisy: float = 0.08, min_steps: int = 50) -> list[Finding]:
    """Batch-to-batch wiggle of the loss above ``noisy`` x chance over the latest steps.

    The wiggle is :func:`noise_level` of the second half of the last raw losses (up to 1000).
    """
    ref = m.reference_loss
    recent = list(m.recent)[len(m.recent) // 2 :]
    if ref is None or ref <= 0 or len(recent) < min_steps:
        return []
    noise = noise_level(recent)
    if noise <= noisy * ref:
        return []
    return [
        Finding(
            "loss_noisy",
            "warning",
            m.last_step,
            f"the loss wiggles by {noise:.3g} from batch to batch ({noise / ref:.0%} of chance)",
            "raise the batch size: the wiggle in the loss is related to the batch size"
            " (or lower the learning rate if it also bounces up)",
            {"noise": noise, "reference_loss": ref, "steps": len(recent)},
        )
    ]


def _series(m: RunHistory, key: str) -> list[float]:
    values = [e.get(key) for e in m.epochs]
    return [float(v) for v in values if isinstance(v, int | float) and math.isfinite(v)]


@diagnosis("overfitting")
def overfitting(
    m: RunHistory,
    *,
    rise: float = 0.25,
    gap: float = 0.15,
    growth: float = 0.1,
    min_epochs: int = 5,
) -> list[Finding]:
    """A growing train/val gap: val loss up by ``rise`` from its best while train loss falls,
    or train - val accuracy >= ``gap`` and grown by ``growth`` since the best val accuracy.

    Ends are means of the last 3 epochs, so one noisy validation does not decide.
    """
    val, train = _series(m, "val_loss"), _series(m, "train_loss")
    advice = (
        "increase regularization (stronger L2, dropout) or collect more data; stop early and"
        " keep the checkpoint with the best validation score"
    )
    if len(val) >= min_epochs and len(train) == len(val):
        best = min(range(len(val)), key=val.__getitem__)
        end = statistics.fmean(val[-3:])
        if best < len(val) - 3 and end > (1 + rise) * val[best] and train[-1] < train[best]:
            msg = (
                f"val loss rose from {val[best]:.4g} (epoch {best + 1}) to {end:.4g}"
                " while train loss fell"
            )
            ev = {"best_val_loss": val[best], "best_epoch": best + 1, "val_loss": end}
            return [Finding("overfitting", "warning", m.last_step, msg, advice, ev)]
    tr, va = _series(m, "train_acc"), _series(m, "val_acc")
    if len(va) >= min_epochs and len(tr) == len(va):
        gaps = [t - v for t, v in zip(tr, va, strict=True)]
        best = max(range(len(va)), key=va.__getitem__)
        end = statistics.fmean(gaps[-3:])
        if end >= gap and end - gaps[best] >= growth:
            msg = (
                f"train accuracy exceeds val accuracy by {end:.0%} (gap grew from {gaps[best]:.0%})"
            )
            ev = {"gap": end, "gap_at_best_val": gaps[best], "best_epoch": best + 1}
            return [Finding("overfitting", "warning", m.last_step, msg, advice, ev)]
    return []


@diagnosis("underfitting")
def underfitting(
    m: RunHistory,
    *,
    low: float = 0.8,
    gap: float = 0.05,
    plateau: float = 0.02,
    min_epochs: int = 3,
) -> list[Finding]:
    """Train accuracy below ``low`` that val accuracy tracks (gap < ``gap``), no longer rising.

    "No longer rising": train accuracy gained less than ``plateau`` over the last third of the
    epochs. Runs whose loss is still at chance are left to not_learning.
    """
    tr, va = _series(m, "train_acc"), _series(m, "val_acc")
    ref = m.reference_loss
    if len(tr) < min_epochs or len(va) != len(tr) or ref is None or not m.recent:
        return []
    third = max(len(tr) // 3, 1)
    end_train, end_val = statistics.fmean(tr[-3:]), statistics.fmean(va[-3:])
    learning = statistics.median(list(m.recent)[-50:]) < 0.9 * ref
    if not (
        learning
        and end_train < low
        and end_train - end_val < gap
        and tr[-1] - tr[-1 - third] < plateau
    ):
        return []
    return [
        Finding(
            "underfitting",
            "warning",
            m.last_step,
            f"train accuracy plateaued at {end_train:.0%} and val accuracy tracks it"
            f" ({end_val:.0%})",
            "the model's capacity is too low: make it larger (more or wider hidden layers), or"
            " lower the regularization",
            {"train_acc": end_train, "val_acc": end_val},
        )
    ]
