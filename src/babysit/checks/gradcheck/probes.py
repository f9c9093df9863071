"""What a leaf check looks at: sampled coordinates and random directions, and their evaluation.

Every probe j has a step: a power of two for a coordinate (``h * max(c, |x_i|)`` rounded, c
the leaf's magnitude), ``h`` for a direction, whose move is ``u = h v`` with entries that are
powers of two. Moves at multiples ``c * step`` with c a power of two are then exact in binary
floating point, so the points x - 2s, x - s, x, x + s, x + 2s are equally spaced and their
finite differences cancel polynomials exactly, as the kink test relies on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from babysit.checks.gradcheck.evaluate import (
    Moves,
    Objective,
    recorded_plain,
    values,
    values_joint,
    verify,
)
from babysit.checks.gradcheck.kinks import Decisions

__all__ = [
    "SMALL",
    "Probes",
    "directions",
    "joint_probes",
    "leaf_probes",
    "pow2",
    "sample_coordinates",
]

SMALL = 1e-2  # the "small entries" direction: entries below this fraction of max |grad|


def pow2(x: Tensor) -> Tensor:
    """The nearest powers of two (in log scale) of positive entries."""
    return torch.exp2(torch.log2(x).round())


def sample_coordinates(
    g: Tensor, count: int, gen: torch.Generator, skip: Tensor | None = None
) -> Tensor:
    """``count`` distinct flat indices of ``g`` (all of them if it is that small), skipping
    ``skip``: half drawn with probability proportional to |g| (signal, even where most of the
    gradient is zero), half stratified by magnitude (round-robin over exact zeros, then each
    decade below max |g| from the smallest up), so that a gradient wrong only on small entries
    (or zeroed there) is sampled too."""
    allowed = torch.arange(g.numel()) if skip is None else (~skip).nonzero().reshape(-1)
    if count == 0:
        return allowed[:0]
    if allowed.numel() <= count:
        return allowed
    mag = g[allowed].abs()
    chosen: dict[int, None] = {}  # insertion-ordered set
    if float(mag.max()) > 0:
        heavy = min(count - count // 2, int((mag > 0).sum()))
        picks = torch.multinomial(mag, heavy, replacement=False, generator=gen)
        chosen.update(dict.fromkeys(allowed[picks].tolist()))
        decade = (-torch.log10(mag / mag.max())).floor().clamp(max=12)  # 0: the top decade
        decade[mag == 0] = 13
        strata = [(decade == d).nonzero().reshape(-1) for d in range(13, -1, -1)]
        draws = [
            s[torch.randint(s.numel(), (2 * count,), generator=gen)].tolist()
            for s in strata
            if s.numel()
        ]
        for i in (int(allowed[p]) for row in zip(*draws, strict=True) for p in row):
            if len(chosen) >= count:
                break
            chosen.setdefault(i)
    while len(chosen) < count:  # few distinct magnitudes (a constant gradient, zeros)
        chosen.setdefault(int(allowed[torch.randint(allowed.numel(), (1,), generator=gen)]))
    return torch.tensor(sorted(chosen), dtype=torch.int64)


_SHIFTS = torch.arange(8, dtype=torch.uint8)


def random_bits(n: int, gen: torch.Generator) -> Tensor:
    """n random 0/1 (uint8): random bytes unpacked, 8 bits each (a third of randint's time)."""
    words = torch.randint(0, 256, ((n + 7) // 8, 1), generator=gen, dtype=torch.uint8)
    return words.bitwise_right_shift(_SHIFTS).bitwise_and_(1).reshape(-1)[:n]


def directions(
    g: Tensor, leaf: Tensor, h: float, c: float, gen: torch.Generator, skip: Tensor | None
) -> list[tuple[str, Tensor]]:
    """The random directions of a leaf, as moves ``u = h v``: "direction" (every entry) and
    "small entries" (only those below ``SMALL`` x max |grad|, when there are some).

    v has entries ``+-c / sqrt(fan_in)`` (fan_in = numel / shape[0] for a matrix or kernel, 1
    for a vector), rounded to powers of two: each unit then moves about as much as in a
    coordinate check, so a direction crosses few more kinks and keeps the truncation error as
    small. Skipped entries do not move.
    """
    fan_in = leaf.numel() // leaf.shape[0] if leaf.ndim >= 2 and leaf.shape[0] else 1
    size = float(pow2(torch.tensor(h * c / math.sqrt(max(1, fan_in)), dtype=torch.float64)))
    u = random_bits(leaf.numel(), gen).to(leaf.dtype).mul_(2 * size).sub_(size)  # +-size
    u = u.reshape(leaf.shape)
    mag = g.abs().reshape(leaf.shape)
    small = mag <= SMALL * mag.max()
    if skip is not None:
        u.view(-1)[skip] = 0.0
        small.view(-1)[skip] = False
    out = [("direction", u)]
    if 0 < int(small.sum()) < leaf.numel():
        out.append(("small entries", u * small))
    return [(name, t.to(leaf.device)) for name, t in out]


@dataclass
class Probes:
    """The probes of one check: coordinates ``idx`` of leaf ``k`` and directions; ``k=None``
    is the joint check, one direction moving every leaf at once (``dirs[d]`` then holds one
    move per leaf). Probe j < m is coordinate j, probe m + d direction d."""

    obj: Objective
    k: int | None
    idx: Tensor  # (m,) int64 flat indices
    theta: Tensor  # (m,) their values, leaf dtype
    step: Tensor  # (m,) powers of two, leaf dtype
    dirs: list[list[Tensor]]
    h: float
    analytic: Tensor  # (m + len(dirs),) float64
    scales: Tensor  # (m + len(dirs),) float64: max |grad| (coordinates), ||grad * v|| (dirs)
    labels: list[tuple[int, ...] | str]
    batched: bool = False  # the last at() used vmap

    @property
    def m(self) -> int:
        return self.idx.numel()

    def __len__(self) -> int:
        return self.m + len(self.dirs)

    def _moves(self, pairs: list[tuple[int, float]]) -> tuple[Moves, list[int]]:
        """The moves of (probe, multiple) pairs of leaf k, and each pair's position in them
        (coordinates first, then directions)."""
        cj = [r for r, (j, _) in enumerate(pairs) if j < self.m]
        dj = [r for r, (j, _) in enumerate(pairs) if j >= self.m]
        js = torch.tensor([pairs[r][0] for r in cj], dtype=torch.int64)
        cs = torch.tensor([pairs[r][1] for r in cj], dtype=self.theta.dtype)
        moves = Moves(
            self.idx[js],
            self.theta[js] + cs.to(self.theta.device) * self.step[js],
            [d[0] for d in self.dirs],
            [(pairs[r][0] - self.m, pairs[r][1]) for r in dj],
        )
        where = [0] * len(pairs)
        for pos, r in enumerate(cj + dj):
            where[r] = pos
        return moves, where

    def at(
        self, pairs: list[tuple[int, float]], *, record: bool = False
    ) -> tuple[Tensor, Tensor, list[Decisions]]:
        """Values (len(pairs),) of probe j moved by ``c * step`` for each pair (j, c), the
        steps actually taken |x' - x| (float64), and with ``record`` the kink decisions. One
        vmap call (or loop) for all of them, so that values compared with each other come
        from the same kernels."""
        out = torch.empty(len(pairs), dtype=torch.float64)
        decisions: list[Decisions] = [[] for _ in pairs]
        if self.k is None:  # joint: one direction over every leaf, the plain loop
            for r, (j, c) in enumerate(pairs):
                ((v, d),) = values_joint(self.obj, self.dirs[j - self.m], [c], record=record)
                out[r], decisions[r] = v, d
            self.batched = False
        else:
            moves, where = self._moves(pairs)
            if record:
                got = recorded_plain(self.obj, self.k, moves)
                self.batched = False
            else:
                flat, self.batched = values(self.obj, self.k, moves)
                got = [(v, []) for v in flat]
            for r, pos in enumerate(where):
                out[r], decisions[r] = got[pos]
        return out, self.steps(pairs), decisions

    def grid(self, js: list[int], coefs: tuple[float, ...]) -> tuple[Tensor, Tensor]:
        """Values and steps (len(js), len(coefs)) of probes js at each multiple, one call."""
        pairs = [(j, c) for j in js for c in coefs]
        values_, steps = self.at(pairs)[:2]
        return values_.reshape(len(js), len(coefs)), steps.reshape(len(js), len(coefs))

    def steps(self, pairs: list[tuple[int, float]]) -> Tensor:
        """|step| actually taken by each (probe, multiple) pair, (len(pairs),) float64."""
        out = torch.empty(len(pairs), dtype=torch.float64)
        for r, (j, c) in enumerate(pairs):
            if j < self.m:
                moved = self.theta[j] + c * self.step[j]
                out[r] = abs(float(moved.double() - self.theta[j].double()))
            else:
                out[r] = abs(c) * self.h
        return out

    def trusted(self, j: int, got: float, f0: float) -> bool:
        """After a batched :meth:`at`: does probe j's value ``got`` at +1 step match the
        loop's? (See :func:`~babysit.checks.gradcheck.evaluate.verify`.)"""
        if self.k is None or not self.batched:
            return True
        return verify(self.obj, self.k, self._moves([(j, 1.0)])[0], got, f0)


def leaf_probes(obj: Objective, k: int, grad: Tensor, *, h: float, count: int, seed: int) -> Probes:
    """The probes of leaf k at step h: ``count`` sampled coordinates (0: none), then the
    directions (drawn first: the same with or without coordinates).

    Coordinates and directions depend only on (seed, k) and the gradient, so every h and
    every loss part sees the same ones for a given gradient.
    """
    leaf = obj.leaves[k].detach()
    gen = torch.Generator().manual_seed(seed * 100_003 + k)
    g64 = grad.detach().reshape(-1).double().cpu()  # (numel,)
    skip = obj.skip.get(k, (None, ""))[0]
    c = obj.magnitude(k)
    dirs = directions(g64, leaf, h, c, gen, skip)
    idx = sample_coordinates(g64, count, gen, skip)  # (m,)
    flat = leaf.reshape(-1)
    theta = flat[idx.to(leaf.device)]
    step = pow2(h * theta.double().abs().clamp(min=c)).to(leaf.dtype)
    g_max = float(g64.abs().max()) if g64.numel() else 0.0
    moves = [u.reshape(-1).cpu().double() for _, u in dirs]  # no copy for float64 on a CPU
    analytic = torch.cat([g64[idx], torch.stack([g64 @ u / h for u in moves])])
    scales = torch.cat(
        [torch.full((idx.numel(),), g_max), torch.stack([(g64 * u).norm() / h for u in moves])]
    )
    labels: list[tuple[int, ...] | str] = [_unravel(i, tuple(leaf.shape)) for i in idx.tolist()]
    return Probes(
        obj, k, idx.to(leaf.device), theta, step, [[u] for _, u in dirs], h, analytic, scales,
        labels + [name for name, _ in dirs],
    )  # fmt: skip


def joint_probes(obj: Objective, grads: list[Tensor], *, h: float, seed: int) -> Probes:
    """One direction moving every leaf of ``obj`` at once (each leaf's own "direction")."""
    gen = torch.Generator().manual_seed(seed * 100_003 - 1)
    moves, analytic, spread = [], 0.0, 0.0
    for k, (leaf, g) in enumerate(zip(obj.leaves, grads, strict=True)):
        g64 = g.detach().reshape(-1).double().cpu()
        skip = obj.skip.get(k, (None, ""))[0]
        u = directions(g64, leaf.detach(), h, obj.magnitude(k), gen, skip)[0][1]
        u64 = u.reshape(-1).double().cpu()
        moves.append(u)
        analytic += float(g64 @ u64) / h
        spread += float((g64 * u64).pow(2).sum())
    empty = torch.empty(0, dtype=torch.int64)
    return Probes(
        obj, None, empty, empty.double(), empty.double(), [moves], h,
        torch.tensor([analytic], dtype=torch.float64),
        torch.tensor([math.sqrt(spread) / h], dtype=torch.float64), ["direction"],
    )  # fmt: skip


def _unravel(i: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    out = []
    for size in reversed(shape):
        out.append(i % size)
        i //= size
    return tuple(reversed(out))
