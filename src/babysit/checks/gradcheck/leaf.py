"""Judge probes of a leaf: centered differences, measured round-off and truncation, kinks.

For a probe with analytic value a (the gradient entry, or g . v for a direction v) and step s:

    n = (f(x + s) - f(x - s)) / 2s                      (the notes' centered formula)
    error = max(|a - n| - u, 0) / max(|a|, |n|)          (relative, net of the uncertainty u)

**Stage A** (every probe): u is the round-off of the subtraction, ``4 eps (|f+| + |f-|) / 2s``.
A probe under the ok bound is done; one above the fail bound crossed a kink or has a wrong
gradient, and ``resolve.py`` tells which, stepping closer to x under the kink recorder.
**Stage B** (the ones between, evaluated again at +-s and +-2s with the base point in one
call, so that all come from the same kernels): the loss's round-off is *measured* (ECnoise, see
``evaluate.py``), the fourth difference ``f(-2s) - 4f(-s) + 6f(0) - 4f(s) + f(2s)`` tells a
kink crossed within 2s (a smooth f leaves ``s^4 f''''``, noise ``sqrt(70) sigma``; a kink
``J s``), and for a smooth probe the truncation error is measured by Richardson,
``|n(2s) - n(s)| / 3``; u = round-off + 4 x truncation. A smooth probe above the ok bound is
tried at 8s and s/8 too, keeping its smallest error: what remains is a wrong gradient (above
the fail bound) or a small but real discrepancy (warn). A probe across a kink is accepted up
to the fail bound (the notes' band for kinks) and beyond it handed to ``resolve.py``, which
steps closer to x until no kink is crossed (where a wrong gradient fails), or judges a kink
sitting exactly at x as a subgradient, never failed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from babysit.checks.gradcheck.evaluate import Objective, estimate_noise
from babysit.checks.gradcheck.kinks import Decisions
from babysit.checks.gradcheck.probes import Probes, joint_probes, leaf_probes
from babysit.checks.gradcheck.report import Scale

__all__ = [
    "KINK_SIGMAS",
    "NOISE_SIGMAS",
    "NONFINITE",
    "RETRY_STEPS",
    "ROUNDOFF_ULPS",
    "TRUNCATION_SAFETY",
    "Item",
    "LeafResult",
    "check_joint",
    "check_leaf",
    "judge",
    "net_error",
    "smooth_verdict",
]

ROUNDOFF_ULPS = 4.0  # round-off of f(x+s) - f(x-s), in units of eps * (|f+| + |f-|)
NOISE_SIGMAS = 4.0  # allowance for measured evaluation noise, in standard deviations
KINK_SIGMAS = 8.0  # a fourth difference beyond this many noise std: a kink was crossed
TRUNCATION_SAFETY = 4.0  # allowance for truncation, in Richardson estimates
RETRY_STEPS = (8.0, 0.125)  # other steps (x s) a smooth probe above the ok bound is tried at
NONFINITE = "non-finite gradient: check inputs"


@dataclass
class Item:
    """One judged probe: a coordinate (``index`` a tuple), "direction" or "small entries".

    ``error``: the relative error the verdict uses (net of the uncertainty; for a kink at x the
    subgradient error); ``raw``: |a - n| / max(|a|, |n|), for the record. ``verdict``: "ok",
    "warn", "fail" or "inconclusive" (a kink at x the analytic value does not bracket).
    """

    index: tuple[int, ...] | str
    analytic: float
    numeric: float
    h: float
    error: float
    raw: float
    roundoff: float = 0.0
    kink: bool = False
    one_sided: tuple[float, float] | None = None  # (backward, forward) slopes at a kink
    verdict: str = "ok"
    note: str = ""


def net_error(a: Tensor, n: Tensor, u: Tensor, floor: Tensor | float = 0.0) -> Tensor:
    """Elementwise max(|a - n| - u, 0) / max(|a|, |n|, floor); 0 where the denominator is 0;
    inf where a or n is not finite."""
    den = torch.maximum(torch.maximum(a.abs(), n.abs()), torch.as_tensor(floor, dtype=a.dtype))
    num = ((a - n).abs() - u).clamp(min=0)
    out = torch.where(den > 0, num / den.clamp(min=torch.finfo(den.dtype).tiny), 0.0)
    return torch.where(torch.isfinite(a) & torch.isfinite(n), out, math.inf)


def judge(
    pr: Probes, js: list[int], base: tuple[float, Decisions], scale: Scale, floor: float
) -> list[Item]:
    """Items for probes ``js`` of ``pr``: stage A, then B and the retries for those above the
    ok bound, then ``resolve.py`` for those across a kink above the fail bound."""
    from babysit.checks.gradcheck.resolve import resolve

    eps = pr.obj.eps
    vals, steps = pr.grid(js, (1.0, -1.0))
    a, floors = pr.analytic[js], floor * pr.scales[js]
    fp, fm, span = vals[:, 0], vals[:, 1], steps.sum(1)
    n = (fp - fm) / span
    roundoff = ROUNDOFF_ULPS * eps * (fp.abs() + fm.abs()) / span
    err, raw = net_error(a, n, roundoff, floors), net_error(a, n, torch.zeros_like(a), floors)
    items = [
        Item(pr.labels[j], float(a[r]), float(n[r]), float(span[r]) / 2, float(err[r]),
             float(raw[r]), float(roundoff[r]))
        for r, j in enumerate(js)
    ]  # fmt: skip
    miss = [r for r, it in enumerate(items) if not it.error <= scale.ok]
    for r in miss:
        if not math.isfinite(items[r].error):
            items[r].verdict, items[r].note = "fail", NONFINITE
    miss = [r for r in miss if items[r].verdict != "fail"]
    if miss and not pr.trusted(js[miss[0]], float(fp[miss[0]]), base[0]):
        return judge(pr, js, base, scale, floor)  # vmap did not see the leaf: the loop now
    if not miss:
        return items
    sigma = pr.obj.noise or 0.0  # measured below only where the verdict depends on it
    noisy = torch.clamp(roundoff, min=NOISE_SIGMAS * math.sqrt(2) * sigma / span)
    err = net_error(a, n, noisy, floors)
    nominal = [(float(fp[r]), float(fm[r]), float(steps[r, 0]), float(steps[r, 1])) for r in miss]
    gray = [q for q, r in enumerate(miss) if err[r] <= scale.fail]
    # Far above the fail bound: a kink crossed, or a wrong gradient; closer to x tells which.
    for q, r in enumerate(miss):
        if q not in gray:
            items[r].error, items[r].roundoff = float(err[r]), float(noisy[r])
            resolve(pr, js[r], items[r], base, scale, nominal[q])
    if gray:
        sigma = estimate_noise(pr.obj, base[0])
    hard = _stage_b(
        pr, [js[miss[q]] for q in gray], [items[miss[q]] for q in gray], sigma, scale, floor
    )
    for j, it, values in hard:
        resolve(pr, j, it, base, scale, values)
    return items


def _assess(
    pr: Probes, js: list[int], factor: float, sigma: float, floor: float
) -> dict[str, Tensor]:
    """Probes js at +-s, +-2s (s = factor x their step) and the base point, in one call:
    centered value, measured round-off, kink evidence, net errors if smooth / across a kink."""
    eps = pr.obj.eps
    coefs = (factor, -factor, 2 * factor, -2 * factor)
    pairs = [(j, c) for j in js for c in coefs] + [(js[0], 0.0)]
    got, steps, _ = pr.at(pairs)
    f0, vals, st = got[-1], got[:-1].reshape(len(js), 4), steps[:-1].reshape(len(js), 4)
    fp, fm, f2p, f2m = vals.unbind(1)
    span, span2 = st[:, 0] + st[:, 1], st[:, 2] + st[:, 3]
    n, n2 = (fp - fm) / span, (f2p - f2m) / span2
    roundoff = torch.maximum(
        ROUNDOFF_ULPS * eps * (fp.abs() + fm.abs()) / span,
        NOISE_SIGMAS * math.sqrt(2) * sigma / span,
    )
    fourth = f2m - 4 * fm + 6 * f0 - 4 * fp + f2p  # s^4 f'''' if smooth, J s across a kink
    second = fm - 2 * f0 + fp
    noise = torch.clamp(eps * vals.abs().amax(1), min=sigma)
    kink = fourth.abs() > KINK_SIGMAS * math.sqrt(70) * noise + 1e-6 * second.abs()
    trunc = (n2 - n).abs() / 3  # Richardson: n(s) = f' + c s^2, n(2s) = f' + 4 c s^2
    a, floors = pr.analytic[js], floor * pr.scales[js]
    return {
        "nominal": torch.stack([fp, fm, st[:, 0], st[:, 1]], 1),
        "n": n,
        "h": span / 2,
        "roundoff": roundoff,
        "kink": kink,
        "smooth": net_error(a, n, 1.5 * roundoff + TRUNCATION_SAFETY * trunc, floors),
        "across": net_error(a, n, roundoff, floors),
    }


def _stage_b(
    pr: Probes, js: list[int], items: list[Item], sigma: float, scale: Scale, floor: float
) -> list[tuple[int, Item, tuple[float, float, float, float]]]:
    """Stage B and the retries for probes ``js`` (their ``items`` updated in place); returns
    the probes across a kink still above the fail bound, with their values at +-s."""
    hard: list[tuple[int, Item, tuple[float, float, float, float]]] = []
    if not js:
        return hard
    got = _assess(pr, js, 1.0, sigma, floor)
    retry: list[int] = []
    for r, (j, it) in enumerate(zip(js, items, strict=True)):
        it.numeric, it.h = float(got["n"][r]), float(got["h"][r])
        it.roundoff = float(got["roundoff"][r])
        if bool(got["kink"][r]):
            it.kink, it.error = True, float(got["across"][r])
            if it.error > scale.fail:
                n0, n1, n2, n3 = (float(v) for v in got["nominal"][r])  # the 4 nominal values
                hard.append((j, it, (n0, n1, n2, n3)))
        else:
            it.error = float(got["smooth"][r])
            if it.error > scale.ok:
                retry.append(r)
    for factor in RETRY_STEPS:
        if not retry:
            break
        got = _assess(pr, [js[r] for r in retry], factor, sigma, floor)
        for q, r in enumerate(retry):
            it = items[r]
            if not bool(got["kink"][q]) and float(got["smooth"][q]) < it.error:
                it.error, it.numeric = float(got["smooth"][q]), float(got["n"][q])
                it.h, it.roundoff = float(got["h"][q]), float(got["roundoff"][q])
        retry = [r for r in retry if items[r].error > scale.ok]
    for it in items:
        if not it.kink:
            it.verdict = smooth_verdict(it.error, scale)
    return hard


def smooth_verdict(error: float, scale: Scale) -> str:
    """A probe no kink disturbed: its error is net of what round-off and truncation explain."""
    return "ok" if error <= scale.ok else "warn" if error <= scale.fail else "fail"


@dataclass
class LeafResult:
    """All items of one leaf at one step h; ``dominated``: the round-off of a direction is
    above the fail bound of its size, so a wrong gradient could hide: the step must grow."""

    items: list[Item]
    h: float
    dominated: bool
    need: float = 1.0  # the factor on h that would bring the round-off under the fail bound

    @property
    def max_error(self) -> float:
        return max((it.error for it in self.items), default=0.0)


def check_leaf(
    obj: Objective,
    k: int,
    grad: Tensor,
    base: tuple[float, Decisions],
    *,
    h: float,
    count: int,
    seed: int,
    floor: float,
    scale: Scale,
    lazy: bool,
) -> LeafResult:
    """Check leaf k of ``obj`` against its analytic gradient ``grad`` at step ``h``.

    ``lazy``: judge the directions first and the ``count`` coordinates only when a direction
    is not plainly ok (a kink, a failure: the coordinates then say where); else all at once.
    """
    pr = leaf_probes(obj, k, grad, h=h, count=0 if lazy else count, seed=seed)
    items = judge(pr, list(range(len(pr))), base, scale, floor)
    if lazy and any(it.verdict != "ok" for it in items):
        full = leaf_probes(obj, k, grad, h=h, count=count, seed=seed)  # the same directions
        items = judge(full, list(range(full.m)), base, scale, floor) + items
    return LeafResult(items, h, *_dominated(pr, items, scale))


def check_joint(
    obj: Objective,
    grads: list[Tensor],
    base: tuple[float, Decisions],
    *,
    h: float,
    seed: int,
    scale: Scale,
) -> LeafResult:
    """One direction over every leaf of ``obj`` (the whole batch), judged as a leaf's."""
    pr = joint_probes(obj, grads, h=h, seed=seed)
    items = judge(pr, [0], base, scale, 0.0)
    return LeafResult(items, h, *_dominated(pr, items, scale))


def _dominated(pr: Probes, items: list[Item], scale: Scale) -> tuple[bool, float]:
    """Round-off above the fail bound of the direction's size ||g * v||: the gradient is tiny
    next to the loss, and only a larger step can tell a wrong one (the notes); and the
    factor on the step that would cure it (x4 to spare). (The small entries' direction is
    small by design: its precision is what it is.)"""
    size = float(pr.scales[pr.m]) if len(pr) > pr.m else math.inf
    worst = max((it.roundoff for it in items if it.index == "direction"), default=0.0)
    if worst <= scale.fail * size:
        return False, 1.0
    return True, math.inf if size == 0 else 4 * worst / (scale.fail * size)
