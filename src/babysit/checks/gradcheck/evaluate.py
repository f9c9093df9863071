"""Evaluate a scalar objective at perturbed copies of its leaves: a plain loop, or vmap batches.

The plain loop (:func:`values_plain`) is the readable reference: write the perturbed value
into the leaf in place, evaluate, restore the saved value exactly. :func:`values_batched`
stacks P perturbed copies of the leaf and evaluates them in one ``torch.func.vmap`` call;
everything upstream of the leaf is computed once for all P (for the second layer of an MLP
the first layer runs once). Both return the same numbers up to round-off; tests hold the
batched path to the loop. :func:`values_joint` moves every leaf at once (the whole-batch
direction).
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
    "NOISE_DELTA",
    "Moves",
    "Objective",
    "estimate_noise",
    "recorded_plain",
    "scalar_loss",
    "values",
    "values_batched",
    "values_joint",
    "values_plain",
    "verify",
]

# Largest stack (P * leaf.numel() elements) worth one vmap call: on a CPU (16 MiB in float64)
# building more copies of the leaf costs about as much as evaluating them one by one; a GPU's
# memory is fast enough that one call beats P small launches up to far larger stacks.
BATCH_ELEMENTS = {"cpu": 1 << 21, "cuda": 1 << 27}


def scalar_loss(loss: object) -> Tensor:
    """The checked function's value as a 0-d tensor; a one-element tensor is accepted, a
    Python number or a larger tensor is refused with the fix."""
    if not isinstance(loss, Tensor):
        raise DataError(
            f"gradcheck: the loss is a {type(loss).__name__}, not a tensor; return the loss "
            "as a torch tensor (a Python number carries no gradient)"
        )
    if loss.numel() != 1:
        raise DataError(
            f"gradcheck: the checked function returned shape {tuple(loss.shape)}; "
            "it must return a scalar (reduce the loss, e.g. with .mean())"
        )
    if loss.is_complex():
        raise DataError("gradcheck: the loss is complex; return a real scalar loss")
    return loss.reshape(())


@dataclass
class Objective:
    """A scalar function of named leaf tensors, checked by perturbing the leaves.

    closure: evaluates at the leaves' current values (the leaves are perturbed in place).
    batched: ``(k, stack) -> (P,)`` values at P values of leaf k (stack: ``(P, *shape)``);
    None where the function cannot be vmapped. seed: the global RNG is reseeded with it before
    every evaluation, so dropout or augmentation draw the same numbers each time (the notes).
    scale: a power of two multiplying the loss (exact), raised when gradients are tiny.
    magnitudes: per leaf, the size c of a typical change of its entries (steps are
    ``h * max(c, |x_i|)``; see ``inputs.py``). skip: per leaf, a flat mask of entries left
    unchecked and why (an Embedding's padding row, whose gradient PyTorch zeroes on purpose).
    """

    names: list[str]
    leaves: list[Tensor]
    closure: Callable[[], Tensor]
    batched: Callable[[int, Tensor], Tensor] | None = None
    seed: int = 0
    scale: float = 1.0
    magnitudes: list[float] = field(default_factory=list)
    skip: dict[int, tuple[Tensor, str]] = field(default_factory=dict)
    batch_failed: set[int] = field(default_factory=set)
    verified: set[int] = field(default_factory=set)  # batched form matched the loop
    noise: float | None = None  # see estimate_noise; computed once, when first needed
    loss_dtype: torch.dtype | None = None  # as the closure returned it

    @property
    def eps(self) -> float:
        """Machine epsilon of the evaluations: the coarser of the leaves' and the loss's."""
        dtypes = [self.leaves[0].dtype]
        if self.loss_dtype is not None and self.loss_dtype.is_floating_point:
            dtypes.append(self.loss_dtype)
        return max(torch.finfo(d).eps for d in dtypes)

    def magnitude(self, k: int) -> float:
        return self.magnitudes[k] if k < len(self.magnitudes) else 1.0

    def reseed(self) -> None:
        """Reset the CPU (and CUDA) generators to ``seed``: the same random draws every time."""
        torch.default_generator.manual_seed(self.seed)
        if any(x.is_cuda for x in self.leaves):
            torch.cuda.manual_seed_all(self.seed)

    def _run(self) -> Tensor:
        """One call of the closure; a forward that writes to a leaf in place is refused."""
        before = [x._version for x in self.leaves]
        loss = scalar_loss(self.closure())
        self.loss_dtype = loss.dtype
        for name, x, v in zip(self.names, self.leaves, before, strict=True):
            if x._version != v:
                raise DataError(
                    f"gradcheck: the forward wrote to {name} in place (an nn.Embedding with "
                    "max_norm renormalises its weight so); a gradient check needs a forward "
                    "that leaves what it checks alone: switch that off for the check"
                )
        return loss

    def value(self) -> float:
        """The objective at the leaves' current values, without a graph."""
        self.reseed()
        with torch.no_grad():
            return float(self._run()) * self.scale

    def recorded(self, *, ties: bool = False) -> tuple[float, Decisions]:
        """The value, and the branch every kink op took (see :class:`KinkRecorder`)."""
        with KinkRecorder(ties=ties) as rec:
            value = self.value()
        return value, rec.decisions

    def gradients(self) -> tuple[float, list[Tensor]]:
        """The value and the analytic gradients (autograd) of the scaled objective, zeros for
        leaves the loss does not use."""
        self.reseed()
        with torch.enable_grad():
            loss = self._run()
            if not loss.requires_grad:
                grads: tuple[Tensor | None, ...] = (None,) * len(self.leaves)
            else:
                grads = torch.autograd.grad(loss, self.leaves, allow_unused=True)
        out = [
            torch.zeros_like(x) if g is None else g.detach() * self.scale if self.scale != 1 else g
            for x, g in zip(self.leaves, grads, strict=True)
        ]
        return float(loss.detach()) * self.scale, out


NOISE_DELTA = 1e-9  # relative move between the noise probe's points (float64; 1e3 eps if more)


def estimate_noise(obj: Objective, f0: float) -> float:
    """Absolute round-off noise of one evaluation of f near x (ECnoise of Moré and Wild, 2011).

    f is evaluated at x + i delta p, i = 0..6, along a random direction p over all leaves
    scaled by their magnitude. For noise of std sigma the k-th difference of those values has
    variance C(2k, k) sigma^2, while the smooth part (order delta^k) vanishes for k >= 4; the
    estimate is the largest sqrt(mean((diff^k f)^2) / C(2k, k)) for k = 4..6. It sees what
    eps * |f| misses: a small loss computed as the difference of large terms. The points lie
    on one side of x and are recorded: if a kink op changes branch between them (a kink is no
    noise) delta shrinks 100-fold, twice; a kink exactly at x is harmless (x is the end of
    the piece). Where no clean line is found the estimate is 0 (round-off then is eps-based).
    """
    if obj.noise is not None:
        return obj.noise
    gen = torch.Generator().manual_seed(obj.seed + 1)
    saved = [leaf.detach().clone() for leaf in obj.leaves]
    signs = [
        torch.randint(0, 2, x.shape, generator=gen, dtype=torch.int8).to(x).mul_(2).sub_(1)
        for x in saved
    ]
    obj.noise = 0.0
    first = max(NOISE_DELTA, 1e3 * obj.eps)
    for delta in (first, first * 1e-2, first * 1e-4):
        steps = [s * (x.abs() + x.abs().mean()) * delta for s, x in zip(signs, saved, strict=True)]
        fs, seen = [f0], []
        with torch.no_grad():
            for i in range(1, 7):
                for leaf, step in zip(obj.leaves, steps, strict=True):
                    leaf.detach().add_(step, alpha=i)
                value, decisions = obj.recorded()
                fs.append(value)
                seen.append(decisions)
                for leaf, x in zip(obj.leaves, saved, strict=True):
                    leaf.detach().copy_(x)
        if all(_same(d, seen[0]) for d in seen[1:]):
            obj.noise = _ecnoise(fs)
            break
    return obj.noise


def _same(a: Decisions, b: Decisions) -> bool:
    return len(a) == len(b) and all(
        na == nb and da.shape == db.shape and torch.equal(da, db)
        for (na, da, _), (nb, db, _) in zip(a, b, strict=True)
    )


def _ecnoise(fs: list[float]) -> float:
    d, sigma = torch.tensor(fs, dtype=torch.float64), 0.0
    for k in range(1, 7):
        d = d[1:] - d[:-1]  # (7 - k,) k-th differences
        if k >= 4:
            sigma = max(sigma, math.sqrt(float(d.pow(2).mean()) / math.comb(2 * k, k)))
    return sigma


@dataclass
class Moves:
    """Perturbed values of one leaf: flat coordinates ``index`` set to ``value`` one at a time,
    then the whole leaf moved to ``leaf + c * steps[s]`` for each (s, c) in ``along``."""

    index: Tensor  # (m,) int64
    value: Tensor  # (m,) leaf dtype
    steps: list[Tensor] = field(default_factory=list)  # each (*leaf.shape,)
    along: list[tuple[int, float]] = field(default_factory=list)

    def __len__(self) -> int:
        return self.index.numel() + len(self.along)

    def pick(self, j: int) -> Moves:
        """The j-th move alone."""
        m = self.index.numel()
        if j < m:
            return Moves(self.index[j : j + 1], self.value[j : j + 1])
        return Moves(self.index[:0], self.value[:0], self.steps, [self.along[j - m]])


def values_plain(obj: Objective, k: int, moves: Moves) -> list[float]:
    """Objective at every move, one evaluation each, leaf restored exactly after each."""
    return [v for v, _ in _plain(obj, k, moves, record=False)]


def recorded_plain(obj: Objective, k: int, moves: Moves) -> list[tuple[float, Decisions]]:
    """Like :func:`values_plain`, with the kink decisions of every evaluation."""
    return _plain(obj, k, moves, record=True)


def _plain(obj: Objective, k: int, moves: Moves, *, record: bool) -> list[tuple[float, Decisions]]:
    leaf = obj.leaves[k].detach()  # shares storage with the leaf
    flat = leaf.view(-1)
    evaluate: Callable[[], tuple[float, Decisions]] = (
        obj.recorded if record else lambda: (obj.value(), [])
    )
    out: list[tuple[float, Decisions]] = []
    with torch.no_grad():
        for i, v in zip(moves.index.tolist(), moves.value, strict=True):
            old = flat[i].clone()
            flat[i] = v
            out.append(evaluate())
            flat[i] = old
        if moves.along:
            saved = leaf.clone()
            for s, c in moves.along:
                leaf.add_(moves.steps[s], alpha=c)  # the same kernel as the batched path's add
                out.append(evaluate())
                leaf.copy_(saved)
    return out


def values_joint(
    obj: Objective, steps: list[Tensor], coefs: list[float], *, record: bool = False
) -> list[tuple[float, Decisions]]:
    """Objective at ``leaves + c * steps`` (every leaf at once) for each c in ``coefs``."""
    saved = [x.detach().clone() for x in obj.leaves]
    evaluate: Callable[[], tuple[float, Decisions]] = (
        obj.recorded if record else lambda: (obj.value(), [])
    )
    out: list[tuple[float, Decisions]] = []
    with torch.no_grad():
        for c in coefs:
            for leaf, step in zip(obj.leaves, steps, strict=True):
                leaf.detach().add_(step, alpha=c)
            out.append(evaluate())
            for leaf, x in zip(obj.leaves, saved, strict=True):
                leaf.detach().copy_(x)
    return out


def values_batched(obj: Objective, k: int, moves: Moves) -> list[float]:
    """Objective at every move in one vmap call over a (P, *leaf.shape) stack."""
    if obj.batched is None:
        raise ValueError("this objective has no batched form")
    base, m = obj.leaves[k].detach(), moves.index.numel()
    stack = base.expand(len(moves), *base.shape).clone()  # (P, *leaf.shape)
    stack.view(len(moves), -1)[torch.arange(m), moves.index] = moves.value
    for r, (s, c) in enumerate(moves.along):
        torch.add(base, moves.steps[s], alpha=c, out=stack[m + r])
    obj.reseed()
    with torch.no_grad(), warnings.catch_warnings():
        # vmap falls back to a loop for ops without a batching rule: slower, still right.
        warnings.filterwarnings("ignore", message="There is a performance drop")
        got = obj.batched(k, stack)
    return (got.reshape(len(moves)) * obj.scale).tolist()


def values(obj: Objective, k: int, moves: Moves) -> tuple[list[float], bool]:
    """Objective at every move, and whether vmap computed them (else the plain loop did).

    Batched numbers are trusted once :func:`verify` matched one of them to the loop (the
    leaf checks call it on the first value that misses); if vmap raises, leaf k falls back to
    the loop for good.
    """
    leaf = obj.leaves[k]
    big = len(moves) * leaf.numel() > BATCH_ELEMENTS.get(leaf.device.type, BATCH_ELEMENTS["cpu"])
    if obj.batched is None or k in obj.batch_failed or len(moves) < 2 or big:
        # A big leaf gains nothing: P copies cost as much as P evaluations.
        return values_plain(obj, k, moves), False
    try:
        return values_batched(obj, k, moves), True
    except Exception:  # vmap refuses the model (custom Function, .item(), in-place buffers)
        obj.batch_failed.add(k)
        return values_plain(obj, k, moves), False


def verify(obj: Objective, k: int, move: Moves, got: float, f0: float) -> bool:
    """Whether ``got``, the batched value of one ``move`` of leaf k, matches the loop's.

    Same point, two kernels: round-off apart. A leaf the model reaches some way vmap cannot
    swap (a tensor held outside the module's attributes) is as far apart as the move changes
    the loss: leaf k then falls back to the loop for good and False is returned (the caller
    evaluates again).
    """
    if k in obj.verified:
        return True
    reference = values_plain(obj, k, move)[0]
    if abs(got - reference) > 1e-3 * abs(reference - f0) + 1e-12 * (1.0 + abs(reference)):
        obj.batch_failed.add(k)
        return False
    obj.verified.add(k)
    return True
