"""Resolve a probe that crossed a kink: step closer to x until none is crossed, else bracket.

The notes: a kink crossed between x - h and x + h makes the centered difference disagree with
a correct gradient. The probe is evaluated under the :class:`KinkRecorder` at steps
``s = h, h/16, h/256, ...`` (powers of two: exact moves), while the round-off of a one-sided
difference, ``4 eps (|f+| + |f-| + 2|f0|) / s``, stays under the fail bound:

- no op changed branch on either side, and the one-sided slopes agree (their gap is within
  round-off, or a sixteenth of the previous scale's: curvature, where a kink the recorder
  does not know would keep it) -- f is smooth on [x - s, x + s]: the centered difference
  there is the derivative of the piece x lies on, which a correct gradient matches
  (a larger error is a failure);
- only entries tied at x changed (a relu input of exactly 0, a max-pool window with two
  equal maxima): the kink sits *at* x and no step avoids it; the analytic value must lie
  between the one-sided slopes, a subgradient ("ok"), else "inconclusive": several kinks
  meeting at x can put the chain rule's value outside that bracket, so it is never failed;
- otherwise (a kink within s) the step shrinks. A probe never resolved is bracketed at the
  smallest step, "ok" or "inconclusive", never "fail".
"""

from __future__ import annotations

from babysit.checks.gradcheck.evaluate import estimate_noise
from babysit.checks.gradcheck.kinks import Decisions, compare
from babysit.checks.gradcheck.leaf import NOISE_SIGMAS, ROUNDOFF_ULPS, Item
from babysit.checks.gradcheck.probes import Probes
from babysit.checks.gradcheck.report import Scale

__all__ = ["MAX_SHRINKS", "SHRINK", "resolve"]

SHRINK = 1 / 16  # each step of the approach to x
MAX_SHRINKS = 6  # down to h / 16**6 (6e-13 for h = 1e-5)


def resolve(
    pr: Probes,
    j: int,
    it: Item,
    base: tuple[float, Decisions],
    scale: Scale,
    nominal: tuple[float, float, float, float],
) -> None:
    """Re-judge probe j (``it``, above the fail bound at its step) in place.

    ``nominal``: f(x + s), f(x - s) and the steps up and down at the nominal step s, whose
    one-sided gap is what a sixteenth of the step must shrink (the recorder starts there).
    The loss's noise is measured (``estimate_noise``) only when a verdict other than "ok"
    depends on it; until then round-off is eps-based.
    """
    f0, d0 = base
    a = it.analytic
    fp, fm, up, down = nominal
    previous_gap = nominal_gap = abs((fp - f0) / up - (f0 - fm) / down)
    real_gap = nominal_gap > 2 * _roundoff(pr, f0, fp, fm, up, down)  # beyond round-off
    for m in range(1, MAX_SHRINKS + 1):
        c = SHRINK**m
        (fp, fm), (up, down), (dp, dm) = _pair(pr, j, c)
        fwd, bwd = (fp - f0) / up, (f0 - fm) / down
        roundoff = _roundoff(pr, f0, fp, fm, up, down)
        side = compare(dp, d0), compare(dm, d0)
        it.kink |= side != ("same", "same")
        gap = abs(fwd - bwd)
        if side == ("same", "same") and gap <= 2 * roundoff + previous_gap / 4:
            # the gap shrank faster than curvature can (x 1/16 per step): a kink was crossed
            it.kink |= real_gap and gap * 16**m < nominal_gap / 4
            _centered(it, fp, fm, up, down, roundoff, scale)
            if it.verdict == "fail" and pr.obj.noise is None:
                estimate_noise(pr.obj, f0)
                _centered(it, fp, fm, up, down, _roundoff(pr, f0, fp, fm, up, down), scale)
            return
        if "other" not in side and side != ("same", "same"):
            it.kink = True
            _bracket(it, fwd, bwd, roundoff, (up + down) / 2, scale, "a kink at x (a tie)")
            break
        previous_gap = gap
        if roundoff > scale.fail * max(abs(a), abs(fwd), abs(bwd)):
            it.kink = True  # the one-sided slopes never agreed: a kink, recorded or not
            _bracket(it, fwd, bwd, roundoff, (up + down) / 2, scale, "kinks too close to x")
            break
    else:
        it.kink = True
        _bracket(it, fwd, bwd, roundoff, (up + down) / 2, scale, "kinks too close to x")
    if it.verdict == "inconclusive" and pr.obj.noise is None:
        estimate_noise(pr.obj, f0)
        roundoff = _roundoff(pr, f0, fp, fm, up, down)
        _bracket(it, fwd, bwd, roundoff, (up + down) / 2, scale, it.note)


def _roundoff(pr: Probes, f0: float, fp: float, fm: float, up: float, down: float) -> float:
    """Round-off of a one-sided difference: eps-based, or the measured noise once known."""
    ulps = ROUNDOFF_ULPS * pr.obj.eps * (abs(fp) + abs(fm) + 2 * abs(f0))
    return max(ulps, 2 * NOISE_SIGMAS * (pr.obj.noise or 0.0)) / min(up, down)


def _centered(
    it: Item, fp: float, fm: float, up: float, down: float, roundoff: float, scale: Scale
) -> None:
    """No kink within the step: the centered difference is the piece's derivative."""
    centered = (fp - fm) / (up + down)
    den = max(abs(it.analytic), abs(centered))
    error = max(abs(it.analytic - centered) - roundoff / 2, 0.0) / den if den > 0 else 0.0
    it.numeric, it.h, it.error, it.one_sided = centered, (up + down) / 2, error, None
    it.verdict = "ok" if error <= scale.fail else "fail"
    it.note = f"no kink within {it.h:.0e} of x" if it.kink else ""


def _pair(
    pr: Probes, j: int, c: float
) -> tuple[tuple[float, float], tuple[float, float], tuple[Decisions, Decisions]]:
    """Probe j at +c and -c times its step, recorded: values, steps, decisions."""
    values, steps, decisions = pr.at([(j, c), (j, -c)], record=True)
    return (
        (float(values[0]), float(values[1])),
        (float(steps[0]), float(steps[1])),
        (decisions[0], decisions[1]),
    )


def _bracket(
    it: Item, fwd: float, bwd: float, roundoff: float, h: float, scale: Scale, why: str
) -> None:  # fmt: skip
    """A kink at x: the analytic value must lie between the one-sided slopes (a subgradient);
    outside, the probe is inconclusive, never failed."""
    a = it.analytic
    lo, hi = min(fwd, bwd), max(fwd, bwd)
    den = max(abs(a), abs(lo), abs(hi))
    off = max(lo - a, a - hi, 0.0) - roundoff
    it.error = max(off, 0.0) / den if den > 0 else 0.0
    it.numeric, it.h, it.one_sided = (fwd + bwd) / 2, h, (bwd, fwd)
    it.verdict = "ok" if it.error <= scale.fail else "inconclusive"
    it.note = why
