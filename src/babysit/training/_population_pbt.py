"""Population-based training inside one batched population (Jaderberg et al. 2017).

Every ``every`` epochs (never after the last), the live members ranked by the epoch's
validation score (the task's metric and direction), with n live members and
``q = min(n // 2, max(1, floor(quantile * n)))`` (0 when n < 2):

    exploit   each of the worst q, and every diverged member, takes a copy of a member
              drawn uniformly from the best q: its weights, buffers and update-rule state
              (an index copy inside the stacked tensors, row dst := row src: no checkpoint
              round trip) and all its hyperparameters (lr, reg, the rule's, the schedule's
              keys and plateau state, dropout rates);
    explore   then each explored hyperparameter of the copy is, with probability
              ``resample``, drawn afresh from its range, else multiplied by a factor drawn
              uniformly from ``perturb`` (0.8 or 1.2), and kept inside the values the key
              takes (optim/hparams.py: lr > 0, mu < 1, dropout < 1; past an open limit it
              lands halfway from the old value to the limit, as ``Limits.clip``).

A perturbed value may leave the range it was first drawn from (PBT's way out of a poor
initial range); only the key's own limits bound it. Diverged members (a NaN/inf loss or
validation score) have no rank: they are always replaced and never a source. With no live
member there is nothing to copy. Everything random comes from one numpy Generator, so the
same seed and scores give the same copies and values.

This module is the pure part (which rows copy which, the new values, the index copy);
``_population_exploit`` applies it to a running ``PopulationLoop``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from babysit.errors import ConfigError
from babysit.optim.hparams import HPARAMS
from babysit.training._population_members import PER_MEMBER_KEYS
from babysit.training._population_model import Stack, map_slots
from babysit.tuning.dimensions import Choice, Dimension, Limits

__all__ = [
    "EXPLORABLE",
    "PBT",
    "Copy",
    "choose",
    "copy_rows",
    "default_space",
    "explorable",
    "explore",
    "key_limits",
    "plan",
]

# The hyperparameters PBT may perturb: per-member numbers a member can change while it
# trains (not its seed, not an architecture key).
EXPLORABLE = frozenset(
    key for key, hp in HPARAMS.items() if hp.type is float and key in PER_MEMBER_KEYS
)


def key_limits(key: str) -> Limits:
    """The values ``key`` takes (optim/hparams.py), as the search's Limits."""
    r = HPARAMS[key].range
    return Limits(
        r.low if math.isfinite(r.low) else None,
        r.high if math.isfinite(r.high) else None,
        low_open=not r.low_closed,
        high_open=not r.high_closed,
    )


def _numeric(dim: Dimension) -> bool:
    """A range of floats, or a choice of numbers (e.g. the notes' mu choices)."""
    if isinstance(dim, Choice):
        return all(isinstance(c, int | float) and not isinstance(c, bool) for c in dim.choices)
    return not dim.integer


def default_space(members: Sequence[Mapping[str, Any]]) -> dict[str, Dimension]:
    """The explorable keys the members set, each resampled among the members' values."""
    seen: dict[str, dict[float, None]] = {}
    for params in members:
        for key, value in params.items():
            if key in EXPLORABLE and isinstance(value, int | float) and not isinstance(value, bool):
                seen.setdefault(key, {})[float(value)] = None
    return {key: Choice(tuple(v), limits=key_limits(key)) for key, v in seen.items()}


def explorable(space: Mapping[str, Dimension]) -> dict[str, Dimension]:
    """The entries of a search space that PBT explores (numeric, per member, not seeds)."""
    return {key: dim for key, dim in space.items() if key in EXPLORABLE and _numeric(dim)}


@dataclass(frozen=True)
class PBT:
    """How a population exploits and explores (see the module docstring).

    space: the explored keys and the ranges a resample draws from (None: the population
    decides: ``train_population`` takes the explorable keys its members set, and resamples
    among the members' initial values). seed: the Generator's seed.
    """

    every: int = 1
    quantile: float = 0.25
    resample: float = 0.25
    perturb: tuple[float, ...] = (0.8, 1.2)
    space: Mapping[str, Dimension] | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        every, q, p = self.every, self.quantile, self.resample
        if not isinstance(every, int) or isinstance(every, bool) or every < 1:
            raise ConfigError(f"pbt: every={every!r} is not a whole number of epochs >= 1")
        if not 0 < q <= 0.5:
            raise ConfigError(
                f"pbt: quantile={q!r} is not in (0, 0.5]: the worst and the best quantile "
                "must not overlap; fix: e.g. 0.25"
            )
        if not 0 <= p <= 1:
            raise ConfigError(f"pbt: resample={p!r} is not a probability in [0, 1]")
        factors = list(self.perturb)
        if not factors or not all(
            isinstance(f, int | float) and math.isfinite(f) and f > 0 for f in factors
        ):
            raise ConfigError(f"pbt: perturb={self.perturb!r} must be factors > 0, e.g. [0.8, 1.2]")
        for key, dim in (self.space or {}).items():
            if key not in EXPLORABLE or not _numeric(dim):
                raise ConfigError(
                    f"pbt: {key} = {dim} cannot be explored: PBT perturbs numbers a member "
                    f"can change while it trains ({', '.join(sorted(EXPLORABLE))})"
                )

    def exploits_after(self, epoch: int, epochs: int) -> bool:
        """Whether epoch ``epoch``'s end is an exploit step (not the last epoch's)."""
        return epoch % self.every == 0 and epoch < epochs

    def exploit_from(self, epoch: int, epochs: int) -> bool:
        """Whether an exploit step comes at the end of ``epoch`` or a later epoch."""
        return -(-epoch // self.every) * self.every < epochs


@dataclass(frozen=True)
class Copy:
    """One exploit: row ``dst`` took row ``src``'s state; its explored values went
    ``before`` -> ``after`` (``resampled``: the keys drawn afresh rather than perturbed)."""

    dst: int
    src: int
    before: dict[str, float]
    after: dict[str, float]
    resampled: tuple[str, ...] = ()


def choose(
    scores: Sequence[float | None], *, direction: str, quantile: float, rng: np.random.Generator
) -> list[tuple[int, int]]:
    """(dst, src) row pairs: the worst quantile and the diverged (score None or not
    finite) copy rows drawn from the best quantile; dst in increasing order."""
    live = [(float(s), i) for i, s in enumerate(scores) if s is not None and math.isfinite(s)]
    if not live:
        return []
    sign = -1.0 if direction == "max" else 1.0
    ranked = [i for _, i in sorted(live, key=lambda p: (sign * p[0], p[1]))]  # best first
    n = len(ranked)
    q = min(n // 2, max(1, math.floor(quantile * n + 1e-9))) if n >= 2 else 0
    top = ranked[:q] or ranked[:1]
    dead = sorted(set(range(len(scores))) - set(ranked))  # no finite score: always replaced
    losers = sorted(ranked[n - q :] + dead if q else dead)
    return [(dst, top[int(rng.integers(len(top)))]) for dst in losers]


def explore(
    values: Mapping[str, float],
    space: Mapping[str, Dimension],
    *,
    perturb: Sequence[float],
    resample: float,
    rng: np.random.Generator,
) -> tuple[dict[str, float], tuple[str, ...]]:
    """New values of the keys of ``space`` (in its order) from ``values``: resampled with
    probability ``resample``, else times a factor from ``perturb``; within each key's limits."""
    out: dict[str, float] = {}
    drawn: list[str] = []
    for key, dim in space.items():
        old = float(values[key])
        if rng.random() < resample:
            new = float(dim.sample(rng))
            drawn.append(key)
        else:
            new = old * float(perturb[int(rng.integers(len(perturb)))])
        limits = key_limits(key)
        out[key] = new if limits.contains(new) else limits.clip(new, inner=old)
    return out, tuple(drawn)


def plan(
    scores: Sequence[float | None],
    values: Sequence[Mapping[str, float]],
    pbt: PBT,
    space: Mapping[str, Dimension],
    *,
    direction: str,
    rng: np.random.Generator,
) -> list[Copy]:
    """One exploit/explore step over rows with ``scores`` and explored ``values`` per row."""
    copies = []
    for dst, src in choose(scores, direction=direction, quantile=pbt.quantile, rng=rng):
        after, drawn = explore(
            values[src], space, perturb=pbt.perturb, resample=pbt.resample, rng=rng
        )
        copies.append(Copy(dst, src, dict(values[dst]), after, drawn))
    return copies


def copy_rows(stack: Stack, copies: Sequence[Copy]) -> None:
    """Row ``dst`` of every stacked tensor (weights, buffers, rule state) := row ``src``."""
    if not copies:
        return
    device = next(iter(stack.params.values())).device
    dst = torch.tensor([c.dst for c in copies], dtype=torch.long, device=device)
    src = torch.tensor([c.src for c in copies], dtype=torch.long, device=device)

    def take(x: Tensor, _: Any = None) -> Tensor:
        return x.index_copy(0, dst, x.index_select(0, src))

    stack.params = {k: take(v) for k, v in stack.params.items()}
    stack.buffers = {k: take(v) for k, v in stack.buffers.items()}
    stack.state = map_slots(stack.state, take, stack.state)
