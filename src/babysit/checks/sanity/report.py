"""The sanity checks' results (``Check``, ``SanityReport``) and their bad-input exception.

Kept apart from :mod:`babysit.checks.sanity.check` so the private check modules can build results
without importing the public module; everything here is re-exported there.
"""

from __future__ import annotations

import itertools
import math
import textwrap
from dataclasses import asdict, dataclass, field
from typing import Any

from babysit._io import json_safe
from babysit.errors import BabysitError

__all__ = ["Check", "SanityInputError", "SanityOptions", "SanityReport"]


class SanityInputError(BabysitError, ValueError):
    """The data, model or loss given to the sanity checks is unusable (found before any check)."""


@dataclass(frozen=True)
class SanityOptions:
    """Tolerances and budgets of the sanity checks; every default comes from the notes.

    tolerance: relative band around the chance loss: pass iff
        ``|observed - expected| <= tolerance * |expected|`` (0.15: 2.302 accepts 1.957..2.648).
    chance_examples: examples the loss at init is averaged over (a few hundred).
    reg_strengths: the reg ladder the loss at init must strictly increase along.
    reg_dominance: warn when, at the configured reg, reg term > reg_dominance * data loss.
    overfit_examples: the tiny subset ("about 20 examples"); overfit_sequences: the tiny
        subset of a sequence model ((N, T) targets: a few sequences, T positions each);
        overfit_loss: the loss to get under with 100 % training accuracy, within
        overfit_steps full-batch Adam steps at overfit_lr (reg = 0).
    For (N, T) targets chance_examples counts target positions (tokens), not sequences.
    """

    tolerance: float = 0.15
    chance_examples: int = 512
    reg_strengths: tuple[float, ...] = (0.0, 1e-3, 1e-1, 1.0, 10.0)
    reg_dominance: float = 1.0
    overfit_examples: int = 20
    overfit_sequences: int = 4
    overfit_loss: float = 0.01
    overfit_steps: int = 1000
    overfit_lr: float = 1e-2

    def __post_init__(self) -> None:
        positive = {
            "tolerance": self.tolerance,
            "chance_examples": self.chance_examples,
            "overfit_examples": self.overfit_examples,
            "overfit_sequences": self.overfit_sequences,
            "overfit_loss": self.overfit_loss,
            "overfit_steps": self.overfit_steps,
            "overfit_lr": self.overfit_lr,
        }
        for name, value in positive.items():
            if not value > 0:
                raise SanityInputError(
                    f"sanity: option {name}={value} must be > 0; fix: pass a positive value"
                )
        ladder = self.reg_strengths
        if len(ladder) < 2 or any(b <= a for a, b in itertools.pairwise(ladder)):
            raise SanityInputError(
                f"sanity: reg_strengths={ladder} must be at least two increasing values; "
                "fix: pass e.g. (0, 1e-3, 1e-1, 1, 10)"
            )


@dataclass
class Check:
    """One sanity check's outcome.

    name: ``"chance_loss" | "reg_raises_loss" | "overfit_small"``.
    expected / observed: a float (``chance_loss``: the loss at chance, the loss at init)
    or a dict of JSON-able values (the other checks).
    advice: why it failed and what to change ("" when there is nothing to say); a passed
    check may still carry advice from its ``warnings``.
    details: the numbers behind the verdict (band, losses per strength, frozen tensors, ...).
    """

    name: str
    passed: bool
    expected: Any
    observed: Any
    advice: str = ""
    warnings: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        """``"fail"`` when not passed, ``"warn"`` when passed with warnings, else ``"ok"``."""
        if not self.passed:
            return "fail"
        return "warn" if self.warnings else "ok"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict of every field plus ``verdict`` (non-finite floats as "nan"/"inf")."""
        out: dict[str, Any] = json_safe(asdict(self))
        out["verdict"] = self.verdict
        return out


# Column widths of the plain-text table; cells wrap inside them.
_COLUMNS = (("check", 15), ("expected", 30), ("observed", 30), ("verdict", 7), ("advice", 56))


def _fmt(value: Any) -> str:
    """A value as a table cell: floats in 4 significant digits, lists and dicts flattened."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_fmt(v)}" for k, v in value.items())
    return str(value)


def _expected_cell(check: Check) -> str:
    band = check.details.get("band")
    if band is None:
        return _fmt(check.expected)
    # chance_loss: show the accepted band next to the value, e.g. "2.303 (1.957..2.648)"
    return f"{_fmt(check.expected)} ({_fmt(band[0])}..{_fmt(band[1])})"


def _table(rows: list[list[str]]) -> str:
    """Rows of cells as a plain-text table; each cell wraps inside its column's width."""
    widths = [w for _, w in _COLUMNS]
    header = [name for name, _ in _COLUMNS]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    for row in rows:
        wrapped = [textwrap.wrap(c, w) or [""] for c, w in zip(row, widths, strict=True)]
        for i in range(max(len(cell) for cell in wrapped)):
            parts = [
                (cell[i] if i < len(cell) else "").ljust(w)
                for cell, w in zip(wrapped, widths, strict=True)
            ]
            lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


@dataclass
class SanityReport:
    """The sanity checks of one model: ``passed`` is True iff every check passed.

    info: what the checks ran on (examples used, seed, reg, device).
    ``str(report)`` is a plain-text table (check, expected, observed, verdict, advice).
    """

    checks: list[Check]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """True iff no check failed (warnings do not fail a report)."""
        return all(c.passed for c in self.checks)

    def __getitem__(self, name: str) -> Check:
        """The check called ``name``; KeyError naming the checks run when there is none."""
        for check in self.checks:
            if check.name == name:
                return check
        raise KeyError(f"no sanity check {name!r}; ran {[c.name for c in self.checks]}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict: ``{passed, checks: [Check.to_dict()], info}``."""
        return {
            "passed": self.passed,
            "checks": [c.to_dict() for c in self.checks],
            "info": json_safe(dict(self.info)),
        }

    def table(self) -> tuple[list[str], list[list[str]]]:
        """(header, rows): check, expected, observed, verdict, advice."""
        rows = [
            [c.name, _expected_cell(c), _fmt(c.observed), c.verdict, c.advice or "-"]
            for c in self.checks
        ]
        return [name for name, _ in _COLUMNS], rows

    def footer(self) -> list[str]:
        """The overall result (warnings are in the advice column)."""
        return ["sanity checks " + ("passed" if self.passed else "FAILED")]

    def __str__(self) -> str:
        return "\n".join([_table(self.table()[1]), *self.footer()])
