"""Check one leaf of an objective: centered differences, a random direction, kinks, subgradients.

For a leaf with analytic gradient g (from autograd) and sampled flat coordinates i:

    numeric_i = (f(x + h_i e_i) - f(x - h_i e_i)) / (2 h_i),   h_i = h * max(1, |x_i|)

(the notes' centered formula; 2 h_i is the step actually representable, (x+h)-(x-h)), and one
random direction v (+-1 / sqrt(fan_in) entries): (f(x + h v) - f(x - h v)) / 2h against g . v,
which sees a wrong gradient in coordinates that were not sampled.
The relative error of each is

    error = max(|a - n| - roundoff, 0) / max(|a|, |n|, floor)

with ``roundoff = ROUNDOFF_ULPS * eps * (|f+| + |f-|) / 2h`` (what the subtraction of two
rounded losses can produce) and ``floor = floor_rel * max|g|`` of the tensor (for the
direction: ``floor_rel * ||g * v||``, the spread of g . v over random signs), so that
near-zero entries of a correct gradient do not alarm. Only items whose error exceeds the
"ok" bound are re-evaluated under the :class:`KinkRecorder`: if a kink op took another
branch at x - h, x or x + h, or the one-sided slopes disagree by more than ``KINK_JUMP``
(relative; smooth curvature gives h |f''| / |f'| ~ 1e-5), the item crossed a kink and is
checked as a subgradient: the analytic value must lie between the two one-sided differences.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from babysit.checks.gradcheck.evaluate import (
    Moves,
    Objective,
    estimate_noise,
    recorded_plain,
    values,
)
from babysit.checks.gradcheck.kinks import Decisions, crossed

__all__ = [
    "KINK_JUMP",
    "NOISE_SIGMAS",
    "ROUNDOFF_ULPS",
    "Item",
    "LeafResult",
    "check_leaf",
    "sample_coordinates",
]

ROUNDOFF_ULPS = 4.0  # round-off of f(x+h) - f(x-h), in units of eps * (|f+| + |f-|)
KINK_JUMP = 1e-2  # one-sided slopes apart by more than this fraction: a hidden kink
NOISE_SIGMAS = 4.0  # allowance for measured evaluation noise, in standard deviations


@dataclass
class Item:
    """One checked coordinate (``index`` a tuple) or the random direction ("direction").

    ``error``: the relative error the verdict uses (round-off allowance subtracted; for a kink,
    the subgradient error); ``raw``: |a - n| / max(|a|, |n|, floor), for the record.
    """

    index: tuple[int, ...] | str
    analytic: float
    numeric: float
    h: float
    error: float
    raw: float
    floor: float
    kink: bool = False
    one_sided: tuple[float, float] | None = None  # (backward, forward) slopes at a kink


@dataclass
class LeafResult:
    """All items of one leaf at one step h; ``dominated``: round-off could hide an error above
    the warn bound of the largest gradient entry, so the step must grow (the notes)."""

    items: list[Item]
    h: float
    dominated: bool

    @property
    def max_error(self) -> float:
        return max(it.error for it in self.items)


def sample_coordinates(g: Tensor, count: int, gen: torch.Generator) -> Tensor:
    """``count`` distinct flat indices of ``g`` (all of them if it is that small): half drawn
    uniformly, half with probability proportional to |g|, so that coordinates with signal are
    among them even where most of the gradient is zero (dead ReLUs)."""
    n = g.numel()
    if n <= count:
        return torch.arange(n)
    uniform = torch.randint(n, (4 * count,), generator=gen)
    cdf = g.abs().cumsum(0)  # (n,)
    heavy = torch.empty(0, dtype=torch.int64)
    if cdf[-1] > 0:
        u = torch.rand(4 * count, generator=gen, dtype=cdf.dtype) * cdf[-1]
        heavy = torch.searchsorted(cdf, u).clamp(max=n - 1)
    chosen: dict[int, None] = {}  # insertion-ordered set
    for pool, want in ((uniform, count - count // 2), (heavy, count), (uniform, count)):
        for i in pool.tolist():
            if len(chosen) >= want:
                break
            chosen.setdefault(i)
    if len(chosen) < count:  # tiny tensors collide often: finish with a permutation
        for i in torch.randperm(n, generator=gen).tolist():
            if len(chosen) >= count:
                break
            chosen.setdefault(i)
    return torch.tensor(sorted(chosen), dtype=torch.int64)


def _rel(a: Tensor, n: Tensor, roundoff: Tensor, floor: Tensor) -> Tensor:
    """Elementwise max(|a-n| - roundoff, 0) / max(|a|, |n|, floor); 0 where all are zero."""
    den = torch.maximum(torch.maximum(a.abs(), n.abs()), floor)
    num = ((a - n).abs() - roundoff).clamp(min=0)
    return torch.where(den > 0, num / den.clamp(min=torch.finfo(den.dtype).tiny), 0.0)


@dataclass
class _Leaf:
    """One leaf's sampled coordinates, their steps, and its random direction."""

    obj: Objective
    k: int
    idx: Tensor  # (m,) flat indices, on the leaf's device
    theta: Tensor  # (m,) their values
    step: Tensor  # (m,) h * max(1, |theta|)
    v: Tensor  # (*shape,) +-1 / sqrt(fan_in)
    h: float

    def __post_init__(self) -> None:
        self.hv = self.h * self.v  # (*shape,) the direction's step

    def moves(self, js: list[int], shrink: float = 1.0) -> Moves:
        """Items ``js`` (coordinates < m, the direction = m) moved up, then all moved down."""
        m = self.idx.numel()
        cj = [j for j in js if j < m]
        up, down = self.theta[cj] + shrink * self.step[cj], self.theta[cj] - shrink * self.step[cj]
        along = (shrink, -shrink) if m in js else ()
        return Moves(torch.cat([self.idx[cj], self.idx[cj]]), torch.cat([up, down]), self.hv, along)

    def steps(self, js: list[int], shrink: float = 1.0) -> tuple[Tensor, Tensor]:
        """The steps actually taken up and down, (len(js),) each, in float64."""
        m = self.idx.numel()
        cj = [j for j in js if j < m]
        up, down = self.theta[cj] + shrink * self.step[cj], self.theta[cj] - shrink * self.step[cj]
        hp, hm = (up - self.theta[cj]).double().cpu(), (self.theta[cj] - down).double().cpu()
        if m in js:
            extra = torch.tensor([shrink * self.h], dtype=torch.float64)
            hp, hm = torch.cat([hp, extra]), torch.cat([hm, extra])
        return hp, hm


def direction(leaf: Tensor, gen: torch.Generator) -> Tensor:
    """Random +-1 entries scaled by 1/sqrt(fan_in) (fan_in = numel / shape[0] for a matrix or
    kernel, 1 for a vector): each unit then moves about as much as in a coordinate check, so
    the direction crosses few more kinks and keeps the truncation error as small."""
    fan_in = leaf.numel() // leaf.shape[0] if leaf.ndim >= 2 and leaf.shape[0] else 1
    bits = torch.randint(0, 2, leaf.shape, generator=gen, dtype=torch.int8).to(leaf)
    return bits.mul_(2 / math.sqrt(max(1, fan_in))).sub_(1 / math.sqrt(max(1, fan_in)))


def check_leaf(
    obj: Objective,
    k: int,
    grad: Tensor,
    base: tuple[float, Decisions],
    *,
    h: float,
    count: int,
    seed: int,
    floor_rel: float,
    ok: float,
    warn: float,
) -> LeafResult:
    """Check leaf k of ``obj`` against its analytic gradient ``grad`` at step ``h``.

    Coordinates and the direction depend only on (seed, k), so every h and every loss part
    sees the same ones for a given gradient.
    """
    leaf = obj.leaves[k].detach()
    gen = torch.Generator().manual_seed(seed * 100_003 + k)
    g64 = grad.detach().reshape(-1).double().cpu()  # (numel,)
    idx = sample_coordinates(g64, count, gen)  # (m,)
    m, eps = idx.numel(), torch.finfo(leaf.dtype).eps
    theta = leaf.reshape(-1)[idx.to(leaf.device)]  # (m,)
    lf = _Leaf(
        obj, k, idx.to(leaf.device), theta, h * theta.abs().clamp(min=1.0), direction(leaf, gen), h
    )
    every = list(range(m + 1))
    # m coordinates up, the same m down, then the direction up and down: (2m + 2,)
    f = torch.tensor(values(obj, k, lf.moves(every), check=2 * m), dtype=torch.float64)
    hp, hm = lf.steps(every)
    f_up, f_down = torch.cat([f[:m], f[-2:-1]]), torch.cat([f[m : 2 * m], f[-1:]])  # (m + 1,)
    v64 = lf.v.reshape(-1).double().cpu()
    a = torch.cat([g64[idx], (g64 @ v64).reshape(1)])
    n = (f_up - f_down) / (hp + hm)
    roundoff = ROUNDOFF_ULPS * eps * (f_up.abs() + f_down.abs()) / (hp + hm)  # (m + 1,)
    g_max = float(g64.abs().max()) if g64.numel() else 0.0
    # Gradient scales: the tensor's largest |g| for coordinates; for the direction the spread
    # of g . v over random signs, ||g * v||. Floors are floor_rel of them.
    scale = torch.full((m + 1,), g_max, dtype=torch.float64)
    scale[m] = float((g64 * v64).norm())
    floors = floor_rel * scale
    err, raw = _rel(a, n, roundoff, floors), _rel(a, n, torch.zeros_like(a), floors)
    sigma = 0.0
    if bool((err > ok).any()):  # misses: is the loss noisier than eps * |f| says?
        sigma = estimate_noise(obj, base[0])
        roundoff = torch.maximum(roundoff, NOISE_SIGMAS * math.sqrt(2) * sigma / (hp + hm))
        err = _rel(a, n, roundoff, floors)
    names = [_unravel(i, tuple(leaf.shape)) for i in idx.tolist()] + ["direction"]
    items = [
        Item(names[j], float(a[j]), float(n[j]), float(hp[j] + hm[j]) / 2, float(err[j]),
             float(raw[j]), float(floors[j]))
        for j in every
    ]  # fmt: skip
    miss = [j for j in every if items[j].error > ok]
    if miss:
        _reexamine(lf, items, miss, base, (eps, sigma), ok)
    # Round-off above warn * scale could hide a wrong gradient: the step must grow.
    dominated = bool(((roundoff > warn * scale) & (scale > 0)).any())
    return LeafResult(items, h, dominated)


def _unravel(i: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    out = []
    for size in reversed(shape):
        out.append(i % size)
        i //= size
    return tuple(reversed(out))


def _reexamine(
    lf: _Leaf,
    items: list[Item],
    miss: list[int],
    base: tuple[float, Decisions],
    noise: tuple[float, float],
    ok: float,
) -> None:
    """Items above the ok bound: re-evaluate them under the kink recorder; an item that crossed a
    kink is checked as a subgradient instead. A kink item still above the bound is tried again
    at h/10 and h/100 (kinks on both sides of x can leave the analytic value outside the
    one-sided bracket; a smaller step may cross none), keeping its smallest error."""
    (f0, d0), (eps, sigma) = base, noise
    for shrink in (1.0, 0.1, 0.01):
        got = recorded_plain(lf.obj, lf.k, lf.moves(miss, shrink))
        hp, hm = lf.steps(miss, shrink)
        # got: c coordinates up, the same c down, then the direction up and down (if missed;
        # miss is sorted, so the direction comes last there too).
        c = sum(j < lf.idx.numel() for j in miss)
        pairs = [(got[r], got[c + r]) for r in range(c)]
        if len(miss) > c:
            pairs.append((got[2 * c], got[2 * c + 1]))
        for r, j in enumerate(miss):
            ((fp, dp), (fm, dm)), it = pairs[r], items[j]
            up, down = float(hp[r]), float(hm[r])
            fwd, bwd = (fp - f0) / up, (f0 - fm) / down
            ulps = ROUNDOFF_ULPS * eps * (abs(fp) + abs(fm) + 2 * abs(f0))
            roundoff = max(ulps, 2 * NOISE_SIGMAS * sigma) / min(up, down)
            jump = abs(fwd - bwd) > KINK_JUMP * max(abs(fwd), abs(bwd), it.floor) + 2 * roundoff
            kink = jump or crossed(dp, d0) or crossed(dm, d0)
            if kink:  # subgradient: the analytic value between the one-sided slopes
                lo, hi = min(fwd, bwd), max(fwd, bwd)
                off = max(lo - it.analytic, it.analytic - hi, 0.0)
                den = max(abs(it.analytic), abs(lo), abs(hi), it.floor)
            elif shrink < 1.0:  # no kink at the smaller step: the centered error there
                off = abs(it.analytic - (fp - fm) / (up + down))
                den = max(abs(it.analytic), abs((fp - fm) / (up + down)), it.floor)
            else:  # smooth at the nominal step: its centered error stands
                continue
            error = max(off - roundoff, 0.0) / den if den > 0 else 0.0
            if (kink and not it.kink) or error < it.error:
                it.error, it.h = error, (up + down) / 2
                if kink:
                    it.kink, it.one_sided = True, (bwd, fwd)
        miss = [j for j in miss if items[j].kink and items[j].error > ok]
        if not miss:
            return
