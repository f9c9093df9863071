"""Finding (one diagnosis with advice) and the registry of diagnosis rules."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from babysit._registry import Registry, unknown_name
from babysit.monitor._history import RunHistory

__all__ = ["CODES", "DIAGNOSES", "SEVERITIES", "Diagnosis", "Finding", "diagnosis"]

# findings.json codes: DESIGN.md's fixed thirteen, then the ones added since (a code keeps its
# meaning once added)
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
    "grads_not_zeroed",  # .grad still holds the last step's gradient: zero_grad() never runs
    "reg_too_strong",  # the weight decay / L2 penalty outweighs the data
    "labels_suspect",  # validation at chance while training fits: labels vs inputs
    "frozen_parameters",  # info: parameters that never get a gradient (deliberately frozen?)
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
            raise ValueError(unknown_name("finding code", self.code, list(CODES), where="Finding"))
        if self.severity not in SEVERITIES:
            raise ValueError(
                unknown_name("severity", self.severity, list(SEVERITIES), where="Finding")
            )

    @property
    def rank(self) -> int:
        """0 for info, 1 for warning, 2 for error."""
        return SEVERITIES.index(self.severity)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        at = "" if self.step is None else f" (step {self.step})"
        return f"[{self.severity}] {self.code}{at}: {self.message} -> {self.advice}"


Diagnosis = Callable[[RunHistory], list[Finding]]
# rules by findings.json code, in registration order (the order they run)
DIAGNOSES: Registry[Diagnosis] = Registry("diagnosis", error=ValueError)


def diagnosis(code: str) -> Callable[[Diagnosis], Diagnosis]:
    """Register a rule ``(history) -> findings`` under its findings.json ``code`` (one of CODES)."""
    if code not in CODES:
        raise ValueError(unknown_name("diagnosis code", code, list(CODES)))
    return DIAGNOSES.register(code)
