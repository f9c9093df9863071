"""Dimensions of a search space: ``Range`` and ``Choice``, parsed from strings by kind.

``KINDS`` maps a distribution's name to its parser::

    loguniform(lo, hi)   10 ** U(log10 lo, log10 hi)   (the notes: lr, reg; lo > 0)
    uniform(lo, hi)      U(lo, hi)                     (the notes: dropout)
    intuniform(lo, hi)   a whole number in [lo, hi]
    choice(a, b, ...)    one of the values (numbers, words, lists)

A dimension asks an Optuna trial for its value (:meth:`Range.suggest`: the value an
enqueue fixed, else the sampler's; this module never imports optuna, so configs validate
without it), draws samples, and maps values to positions in [0, 1] (in log space for log
ranges) for the stages' zoom. :func:`narrow` reads a stage's range back from its text.
Parse errors raise ValueError with the reason and a fix.
"""

from __future__ import annotations

import ast
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from babysit._registry import Registry

__all__ = ["KINDS", "Choice", "Dimension", "Limits", "Range", "narrow", "parse_dimension"]


@dataclass(frozen=True)
class Limits:
    """The values a key may take: ``low < x`` (``low <= x`` when closed), likewise ``high``."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def contains(self, x: float) -> bool:
        above = self.low is None or (x > self.low if self.low_open else x >= self.low)
        below = self.high is None or (x < self.high if self.high_open else x <= self.high)
        return above and below

    def inside(self, x: float) -> float:
        """``x``, or the nearest value the limits allow (next to an open limit)."""
        if self.low is not None and not (x > self.low if self.low_open else x >= self.low):
            x = math.nextafter(self.low, math.inf) if self.low_open else self.low
        if self.high is not None and not (x < self.high if self.high_open else x <= self.high):
            x = math.nextafter(self.high, -math.inf) if self.high_open else self.high
        return x

    def clip(self, x: float, *, inner: float) -> float:
        """``x`` moved inside the limits; past an open limit, halfway from ``inner`` to it."""
        if not self.contains(x):
            past_low = self.low is not None and x <= self.low
            bound, is_open = (self.low, self.low_open) if past_low else (self.high, self.high_open)
            assert bound is not None
            x = (inner + bound) / 2 if is_open else bound
        return x

    def __str__(self) -> str:
        low = "-inf" if self.low is None else f"{self.low:g}"
        high = "inf" if self.high is None else f"{self.high:g}"
        return f"{'(' if self.low_open else '['}{low}, {high}{')' if self.high_open else ']'}"


@dataclass(frozen=True)
class Range:
    """A numeric range; ``log``: uniform in log10 space; ``integer``: whole numbers.

    Whole numbers are drawn from [low, high], floats from [low, high) (as numpy and the
    notes' ``uniform(0, 1)`` for dropout < 1 do): ``high`` may be a key's open limit.
    """

    kind: str  # its name in KINDS, used to write it back out
    low: float
    high: float
    log: bool = False
    integer: bool = False
    limits: Limits = field(default_factory=Limits, compare=False)

    def __str__(self) -> str:
        return f"{self.kind}({self.low!r}, {self.high!r})"

    def _scale(self, x: float) -> float:
        return math.log10(x) if self.log else float(x)

    def to_unit(self, x: float) -> float:
        """Position of ``x`` in the range: 0 at low, 1 at high (in log space for log ranges)."""
        lo, hi = self._scale(self.low), self._scale(self.high)
        return (self._scale(x) - lo) / (hi - lo)

    def from_unit(self, u: float) -> float:
        """The inverse of :meth:`to_unit`; ``u`` outside [0, 1] extrapolates."""
        lo, hi = self._scale(self.low), self._scale(self.high)
        v = lo + u * (hi - lo)
        return 10.0**v if self.log else v

    def sample(self, rng: np.random.Generator) -> float | int:
        if self.integer:
            return int(rng.integers(int(self.low), int(self.high) + 1))
        value = self.from_unit(float(rng.uniform(0.0, 1.0)))
        return min(max(value, self.low), self.high)  # 10 ** log10(x) may round past an end

    @property
    def checked_values(self) -> tuple[float, float]:
        """The ends a key's limits must admit: float ranges draw from [low, high)."""
        return (
            (self.low, self.high)
            if self.integer
            else (self.low, math.nextafter(self.high, self.low))
        )

    def decode(self, value: Any) -> Any:
        """The value a trial uses: a float a sampler put on an open limit moves inside."""
        return value if self.integer else self.limits.inside(value)

    @property
    def narrowed(self) -> bool:
        return False  # Optuna accepts a float or int range that changes between stages

    def distribution(self) -> Any:
        """The Optuna distribution that :meth:`suggest` draws from (optuna loads lazily)."""
        from optuna.distributions import FloatDistribution, IntDistribution

        if self.integer:
            return IntDistribution(int(self.low), int(self.high))
        return FloatDistribution(float(self.low), float(self.high), log=self.log)

    def suggest(self, trial: Any, key: str) -> Any:
        """``trial.suggest_*`` (an ``optuna.Trial``) over this range; the stored value."""
        if self.integer:
            return trial.suggest_int(key, int(self.low), int(self.high))
        return trial.suggest_float(key, float(self.low), float(self.high), log=self.log)


@dataclass(frozen=True)
class Choice:
    """One of a list of values. Optuna stores lists (e.g. ``[128, 128]``) as JSON strings.

    ``universe`` keeps the search space's choices when a stage narrows ``choices``:
    Optuna's categorical distribution of a key may not change within a study, so the
    distribution stays the universe's and the master draws from ``choices`` itself.
    """

    choices: tuple[Any, ...]
    limits: Limits = field(default_factory=Limits, compare=False)
    universe: tuple[Any, ...] = ()  # () -> choices
    kind: str = "choice"

    def __post_init__(self) -> None:
        if not self.universe:
            object.__setattr__(self, "universe", self.choices)

    def __str__(self) -> str:
        return f"{self.kind}({', '.join(repr(c) for c in self.choices)})"

    @property
    def narrowed(self) -> bool:
        return len(self.choices) < len(self.universe)

    def sample(self, rng: np.random.Generator) -> Any:
        return _encode(self.choices[int(rng.integers(len(self.choices)))])

    def decode(self, value: Any) -> Any:
        """The choice a stored (encoded) value stands for."""
        return next((c for c in self.universe if _encode(c) == value), value)

    def distribution(self) -> Any:
        """The Optuna distribution that :meth:`suggest` draws from: over the universe."""
        from optuna.distributions import CategoricalDistribution

        return CategoricalDistribution([_encode(c) for c in self.universe])

    def suggest(self, trial: Any, key: str) -> Any:
        """``trial.suggest_categorical`` over the universe (a narrowed stage's values are
        fixed by the master's enqueue); the stored (encoded) value."""
        return trial.suggest_categorical(key, [_encode(c) for c in self.universe])


Dimension = Range | Choice


def narrow(dim: Dimension, text: str) -> Dimension:
    """``dim`` narrowed to ``text`` (a stage's range as ``str()`` wrote it), keeping its key's
    limits and, for a choice, its universe."""
    parsed = parse_dimension(text)
    if isinstance(dim, Choice) and isinstance(parsed, Choice):
        return replace(dim, choices=parsed.choices)
    if isinstance(dim, Range) and isinstance(parsed, Range) and parsed.kind == dim.kind:
        return replace(dim, low=parsed.low, high=parsed.high)
    raise ValueError(f"{text!r} is not a range of the same kind as {dim}")


def _encode(value: Any) -> Any:
    plain = value is None or isinstance(value, bool | int | float | str)
    return value if plain else json.dumps(value)


KINDS: Registry[Callable[[list[Any]], Dimension]] = Registry("distribution", error=ValueError)
_CALL = re.compile(r"^\s*([A-Za-z_]\w*)\s*\((.*)\)\s*$", re.DOTALL)


def _bounds(kind: str, args: list[Any], *, whole: bool = False) -> tuple[Any, Any]:
    number = int if whole else int | float
    ok = len(args) == 2 and all(
        isinstance(a, number) and not isinstance(a, bool) and math.isfinite(a) for a in args
    )
    if not ok:
        what = "two whole numbers" if whole else "two finite numbers"
        raise ValueError(f"{kind} takes {what}: write {kind}(low, high)")
    low, high = args
    if low >= high:
        raise ValueError(
            f"low {low!r} must be below high {high!r}: write {kind}({high!r}, {low!r})"
        )
    return low, high


def _loguniform(args: list[Any]) -> Dimension:
    low, high = _bounds("loguniform", args)
    if low <= 0:
        raise ValueError(
            f"a log range needs low > 0 (log10 of {low!r} is undefined): "
            f"write e.g. loguniform({high / 1e6:g}, {high!r}), or uniform(...) for a linear range"
        )
    return Range("loguniform", low, high, log=True)


KINDS.add("loguniform", _loguniform)


def _uniform(args: list[Any]) -> Dimension:
    return Range("uniform", *_bounds("uniform", args))


KINDS.add("uniform", _uniform)


def _intuniform(args: list[Any]) -> Dimension:
    return Range("intuniform", *_bounds("intuniform", args, whole=True), integer=True)


KINDS.add("intuniform", _intuniform)


def _choice(args: list[Any]) -> Dimension:
    if not args:
        raise ValueError("choice() is empty: give at least one value, e.g. choice(0.5, 0.9)")
    encoded = [_encode(a) for a in args]
    if len(set(map(repr, encoded))) < len(encoded):
        raise ValueError("choice() lists a value twice: give each value once")
    return Choice(tuple(args))


KINDS.add("choice", _choice)


def _literal(node: ast.expr) -> Any:
    """A bare word is a string (``choice(relu, tanh)``); anything else a Python literal."""
    return node.id if isinstance(node, ast.Name) else ast.literal_eval(node)


def parse_dimension(text: object) -> Dimension:
    """``"loguniform(1e-6, 1e1)"`` -> Range; raises ValueError with the reason and a fix."""
    match = _CALL.match(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(
            "expected a distribution: loguniform(lo, hi), uniform(lo, hi), intuniform(lo, hi) "
            "or choice(a, b, ...)"
        )
    name, inside = match.groups()
    build = KINDS.get_or_raise(name)
    try:
        tree = ast.parse(f"[{inside}]", mode="eval").body
        args = [_literal(e) for e in tree.elts] if isinstance(tree, ast.List) else None
    except (SyntaxError, ValueError, TypeError):
        args = None
    if args is None:
        raise ValueError(
            f"cannot read the arguments of {name}(...): give numbers, words or lists, "
            "separated by commas"
        )
    return build(args)
