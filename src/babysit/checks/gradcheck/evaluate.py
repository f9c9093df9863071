"""Evaluate a scalar objective at perturbed copies of one leaf: a plain loop, or vmap batches.

The plain loop (:func:`values_plain`) is the readable reference: write the perturbed value
into the leaf in place, evaluate, restore the saved value exactly. :func:`values_batched`
stacks P perturbed copies of the leaf and evaluates them in one ``torch.func.vmap`` call;
everything upstream of the leaf is computed once for all P (for the second layer of an MLP
the first layer runs once). Both return the same numbers up to round-off; tests hold the
batched path to the loop.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from babysit.checks.gradcheck.kinks import Decisions, KinkRecorder
from babysit.errors import DataError

__all__ = [
    "BATCH_ELEMENTS",
    "Moves",
    "Objective",
    "estimate_noise",
    "recorded_plain",
    "values",
    "values_batched",
    "values_plain",
]

# Largest stack (P * leaf.numel() elements) worth one vmap call: on a CPU (16 MiB in float64)
# building more copies of the leaf costs about as much as evaluating them one by one; a GPU's
# memory is fast enough that one call beats P small launches up to far larger stacks.
BATCH_ELEMENTS = {"cpu": 1 << 21, "cuda": 1 << 27}


@dataclass
class Objective:
    """A scalar function of named leaf tensors, checked by perturbing the leaves.

    closure: evaluates at the leaves' current values (the leaves are perturbed in place).
    batched: ``(k, stack) -> (P,)`` values at P values of leaf k (stack: ``(P, *shape)``);
    None where the function cannot be vmapped. seed: the global RNG is reseeded with it before
    every evaluation, so dropout or augmentation draw the same numbers each time (the notes).
    scale: a power of two multiplying the loss (exact), raised when gradients are tiny.
    """

    names: list[str]
    leaves: list[Tensor]
    closure: Callable[[], Tensor]
    batched: Callable[[int, Tensor], Tensor] | None = None
    seed: int = 0
    scale: float = 1.0
    batch_failed: set[int] = field(default_factory=set)
    noise: float | None = None  # see estimate_noise; computed once, when first needed

    def reseed(self) -> None:
        """Reset the CPU (and CUDA) generators to ``seed``: the same random draws every time."""
        torch.default_generator.manual_seed(self.seed)
        if any(x.is_cuda for x in self.leaves):
            torch.cuda.manual_seed_all(self.seed)

    def value(self) -> float:
        """The objective at the leaves' current values, without a graph."""
        self.reseed()
        with torch.no_grad():
            return float(self.closure()) * self.scale

    def recorded(self) -> tuple[float, Decisions]:
        """The value, and the branch every kink op took (see :class:`KinkRecorder`)."""
        with KinkRecorder() as rec:
            value = self.value()
        return value, rec.decisions

    def gradients(self) -> list[Tensor]:
        """Analytic gradients (autograd) of the scaled objective, zeros for unused leaves."""
        self.reseed()
        with torch.enable_grad():
            loss = self.closure()
            if loss.numel() != 1:
                raise DataError(
                    f"gradcheck: the checked function returned shape {tuple(loss.shape)}; "
                    "it must return a scalar (reduce the loss, e.g. with .mean())"
                )
            grads = torch.autograd.grad(loss, self.leaves, allow_unused=True)
        return [
            torch.zeros_like(x) if g is None else g.detach() * self.scale if self.scale != 1 else g
            for x, g in zip(self.leaves, grads, strict=True)
        ]


NOISE_DELTA = 1e-7  # relative move of the noise probe: smooth change vanishes at order >= 4


def estimate_noise(obj: Objective, f0: float) -> float:
    """Absolute round-off noise of one evaluation of f near x (ECnoise of Moré and Wild, 2011).

    f is evaluated at x + i delta p, i = -3..3, along a random direction p over all leaves
    scaled by their magnitude. For noise of std sigma the k-th difference of those values has
    variance C(2k, k) sigma^2, while the smooth part (order delta^k) vanishes for k >= 4; the
    estimate is the largest sqrt(mean((diff^k f)^2) / C(2k, k)) for k = 4..6. It sees what
    eps * |f| misses: a small loss computed as the difference of large terms.
    """
    if obj.noise is not None:
        return obj.noise
    gen = torch.Generator().manual_seed(obj.seed + 1)
    saved = [leaf.detach().clone() for leaf in obj.leaves]
    steps = []
    for x in saved:
        signs = torch.randint(0, 2, x.shape, generator=gen, dtype=torch.int8).to(x)
        steps.append(signs.mul_(2).sub_(1).mul_(x.abs() + x.abs().mean()).mul_(NOISE_DELTA))
    fs = []
    with torch.no_grad():
        for i in range(-3, 4):
            for leaf, step in zip(obj.leaves, steps, strict=True):
                leaf.detach().add_(step, alpha=i)
            fs.append(obj.value() if i else f0)
            for leaf, x in zip(obj.leaves, saved, strict=True):
                leaf.detach().copy_(x)
    d, sigma = torch.tensor(fs, dtype=torch.float64), 0.0
    for k in range(1, 7):
        d = d[1:] - d[:-1]  # (7 - k,) k-th differences
        if k >= 4:
            sigma = max(sigma, math.sqrt(float(d.pow(2).mean()) / math.comb(2 * k, k)))
    obj.noise = sigma
    return sigma


@dataclass
class Moves:
    """Perturbed values of one leaf: flat coordinates ``index`` set to ``value`` one at a time,
    then the whole leaf moved to ``leaf + c * step`` for each c in ``along`` (a direction)."""

    index: Tensor  # (m,) int64
    value: Tensor  # (m,) leaf dtype
    step: Tensor | None = None  # (*leaf.shape,)
    along: tuple[float, ...] = ()

    def __len__(self) -> int:
        return self.index.numel() + len(self.along)

    def pick(self, j: int) -> Moves:
        """The j-th move alone."""
        m = self.index.numel()
        if j < m:
            return Moves(self.index[j : j + 1], self.value[j : j + 1])
        return Moves(self.index[:0], self.value[:0], self.step, (self.along[j - m],))


def values_plain(obj: Objective, k: int, moves: Moves) -> list[float]:
    """Objective at every move, one evaluation each, leaf restored exactly after each."""
    return [v for v, _ in _plain(obj, k, moves, record=False)]


def recorded_plain(obj: Objective, k: int, moves: Moves) -> list[tuple[float, Decisions]]:
    """Like :func:`values_plain`, with the kink decisions of every evaluation."""
    return _plain(obj, k, moves, record=True)


def _plain(obj: Objective, k: int, moves: Moves, *, record: bool) -> list[tuple[float, Decisions]]:
    leaf = obj.leaves[k].detach()  # shares storage with the leaf
    flat = leaf.view(-1)
    evaluate = obj.recorded if record else lambda: (obj.value(), [])
    out: list[tuple[float, Decisions]] = []
    with torch.no_grad():
        for i, v in zip(moves.index.tolist(), moves.value, strict=True):
            old = flat[i].clone()
            flat[i] = v
            out.append(evaluate())
            flat[i] = old
        if moves.along and moves.step is not None:
            saved = leaf.clone()
            for c in moves.along:
                leaf.add_(moves.step, alpha=c)  # the same kernel as the batched path's add
                out.append(evaluate())
                leaf.copy_(saved)
    return out


def values_batched(obj: Objective, k: int, moves: Moves) -> list[float]:
    """Objective at every move in one vmap call over a (P, *leaf.shape) stack."""
    if obj.batched is None:
        raise ValueError("this objective has no batched form")
    base, m = obj.leaves[k].detach(), moves.index.numel()
    stack = base.expand(len(moves), *base.shape).clone()  # (P, *leaf.shape)
    stack.view(len(moves), -1)[torch.arange(m), moves.index] = moves.value
    if moves.step is not None:
        for r, c in enumerate(moves.along):
            torch.add(base, moves.step, alpha=c, out=stack[m + r])
    obj.reseed()
    with torch.no_grad(), warnings.catch_warnings():
        # vmap falls back to a loop for ops without a batching rule: slower, still right.
        warnings.filterwarnings("ignore", message="There is a performance drop")
        return (obj.batched(k, stack) * obj.scale).tolist()


def values(obj: Objective, k: int, moves: Moves, *, check: int | None = None) -> list[float]:
    """Objective at every move: batched when the objective allows it, else the plain loop.

    ``check``: the position of a move that is also evaluated by the loop; if the batched value
    there disagrees beyond round-off (the model reaches the leaf some way vmap cannot swap) or
    vmap raises, leaf k falls back to the loop for good.
    """
    leaf = obj.leaves[k]
    big = len(moves) * leaf.numel() > BATCH_ELEMENTS.get(leaf.device.type, BATCH_ELEMENTS["cpu"])
    if obj.batched is None or k in obj.batch_failed or len(moves) < 3 or big:
        # A big leaf gains nothing: P copies cost as much as P evaluations.
        return values_plain(obj, k, moves)
    try:
        got = values_batched(obj, k, moves)
    except Exception:  # vmap refuses the model (custom Function, .item(), in-place buffers)
        obj.batch_failed.add(k)
        return values_plain(obj, k, moves)
    if check is not None:
        reference, scale = values_plain(obj, k, moves.pick(check))[0], max(abs(v) for v in got)
        # Same point, two kernels: round-off apart. A leaf vmap failed to swap is far apart.
        spread = max(got) - min(got)
        if abs(got[check] - reference) > 1e-3 * spread + 1e-12 * (1.0 + scale):
            obj.batch_failed.add(k)
            return values_plain(obj, k, moves)
    return got
