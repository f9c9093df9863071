"""Finding (one diagnosis with advice) and the registry of diagnosis rules."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from babysit.monitor._metrics import Metrics

__all__ = ["CODES", "DIAGNOSES", "SEVERITIES", "Diagnosis", "Finding", "diagnosis"]

# findings.json codes, fixed by DESIGN.md
CODES = (
    "lr_too_high",
    "lr_too_low",
    "loss_noisy",
    "overfitting",
    "underfitting",
    "update_ratio_high",
    "update_ratio_low",
    "dead_relu",
    "saturation",
    "vanishing_gradients",
    "exploding_gradients",
    "diverged",
    "not_learning",
)
SEVERITIES = ("info", "warning", "error")  # least to most severe


@dataclass
class Finding:
    """One diagnosis: what was seen (message, evidence), when (step), and what to do (advice)."""

    code: str
    severity: str
    step: int | None
    message: str
    advice: str
    evidence: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.code not in CODES:
            raise ValueError(f"Finding.code {self.code!r} is not one of {', '.join(CODES)}")
        if self.severity not in SEVERITIES:
            raise ValueError(f"Finding.severity {self.severity!r} is not one of {SEVERITIES}")

    @property
    def rank(self) -> int:
        """0 for info, 1 for warning, 2 for error."""
        return SEVERITIES.index(self.severity)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        at = "" if self.step is None else f" (step {self.step})"
        return f"[{self.severity}] {self.code}{at}: {self.message} -> {self.advice}"


Diagnosis = Callable[["Metrics"], list[Finding]]
DIAGNOSES: dict[str, Diagnosis] = {}


def diagnosis(code: str) -> Callable[[Diagnosis], Diagnosis]:
    """Register a rule ``(metrics) -> findings`` under its findings.json ``code``."""
    if code not in CODES:
        raise ValueError(f"diagnosis code {code!r} is not one of {', '.join(CODES)}")

    def register(fn: Diagnosis) -> Diagnosis:
        DIAGNOSES[code] = fn
        return fn

    return register
