"""Per-member hyperparameters of a population at each step: (P,) tensors for rules.step.

The trainer's ``LRController`` does this for one model: lr from the schedule at epoch
``t = step / steps_per_epoch`` (``SCHEDULES[kind](lr0, t, **keys)``, or the plateau's lr,
which changes at epoch ends), and the momentum ramp (``momentum_at``) for the rule's
momentum hyperparameter (mu, or Adam's beta1). Here each member has its own lr0, keys
and plateau, and each schedule is the same pure function evaluated per member.

A hyperparameter all members share is passed to ``rules.step`` as a number; one that
differs is a (P,) tensor. A constant schedule costs nothing per step; a pure one costs
one Python call per member and step (the values are also what the batch records log).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from babysit.optim.hparams import MOMENTUM_KEYS, RULE_HPARAMS
from babysit.optim.schedules import (
    SCHEDULE_KEYS,
    SCHEDULES,
    Plateau,
    check_schedule,
    momentum_at,
)
from babysit.training._population_members import Member

__all__ = ["MemberHParams"]

Hp = float | Tensor
_PLATEAU_KEYS = ("factor", "patience", "threshold", "min_lr")


class MemberHParams:
    """The rule's hyperparameters of P members, their lr schedules and momentum ramps."""

    def __init__(
        self,
        rule: str,
        kind: str,
        members: Sequence[Member],
        *,
        steps_per_epoch: int,
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        spec = RULE_HPARAMS[rule]
        self.kind, self.momentum = kind, spec.momentum  # "mu" | "beta1" | None
        self.dtype, self.device = dtype, device
        self.steps_per_epoch = steps_per_epoch
        self.names = spec.hparams  # e.g. ("lr", "mu")
        self.values: dict[str, list[float]] = {
            name: [float(m.get(f"optim.{name}")) for m in members] for name in self.names
        }
        given = [{k: m.get(f"schedule.{k}") for k in SCHEDULE_KEYS[kind]} for m in members]
        self.keys = [check_schedule(kind, keys) for keys in given]
        self.plateaus = (
            [
                Plateau(lr, **{k: keys[k] for k in _PLATEAU_KEYS})
                for lr, keys in zip(self.values["lr"], self.keys, strict=True)
            ]
            if kind == "plateau"
            else None
        )
        self._cache: tuple[dict[str, Hp], list[float], list[float] | None] | None = None

    @property
    def ramped(self) -> bool:
        """Whether some member's momentum follows a ramp (schedule.mu_start)."""
        return self.momentum is not None and any(k["mu_start"] is not None for k in self.keys)

    @property
    def constant(self) -> bool:
        """The same hyperparameters at every step of an epoch (no pure schedule, no ramp)."""
        return self.kind in ("none", "plateau") and not self.ramped

    def _column(self, values: list[float]) -> Hp:
        if all(v == values[0] for v in values):
            return values[0]
        return torch.tensor(values, dtype=self.dtype, device=self.device)

    def lr_at(self, t: float) -> list[float]:
        """Each member's lr at epoch t."""
        if self.plateaus is not None:
            return [p.lr for p in self.plateaus]
        fn = SCHEDULES[self.kind]
        return [
            fn(lr0, t, **{k: v for k, v in keys.items() if k not in MOMENTUM_KEYS})
            for lr0, keys in zip(self.values["lr"], self.keys, strict=True)
        ]

    def momentum_values(self, t: float) -> list[float] | None:
        """Each member's momentum (mu or beta1) at epoch t; None for rules without one."""
        if self.momentum is None:
            return None
        mus = self.values[self.momentum]
        if not self.ramped:
            return mus
        return [
            momentum_at(t, mu=mu, mu_start=k["mu_start"], mu_epochs=k["mu_epochs"])
            for mu, k in zip(mus, self.keys, strict=True)
        ]

    def at(self, step: int) -> tuple[dict[str, Hp], list[float], list[float] | None]:
        """(hyperparameters for rules.step, lr per member, momentum per member) at ``step``."""
        if self.constant and self._cache is not None:
            return self._cache
        t = step / self.steps_per_epoch
        lr, mu = self.lr_at(t), self.momentum_values(t)
        hp = {name: self._column(self.values[name]) for name in self.names}
        hp["lr"] = self._column(lr)
        if mu is not None and self.momentum is not None:
            hp[self.momentum] = self._column(mu)
        self._cache = (hp, lr, mu)
        return self._cache

    def end_epoch(self, metrics: Sequence[float], *, mode: str) -> None:
        """Feed each member's validation metric to its plateau (a no-op for pure kinds)."""
        if self.plateaus is not None:
            for plateau, value in zip(self.plateaus, metrics, strict=True):
                plateau.update(value, mode=mode)
            self._cache = None

    def select(self, rows: Sequence[int]) -> None:
        """Keep the members at ``rows`` (in that order): the others have stopped."""
        self.values = {k: [v[r] for r in rows] for k, v in self.values.items()}
        self.keys = [self.keys[r] for r in rows]
        if self.plateaus is not None:
            self.plateaus = [self.plateaus[r] for r in rows]
        self._cache = None

    def copy_row(self, dst: int, src: int) -> None:
        """Row ``dst`` takes row ``src``'s hyperparameters, schedule keys and plateau state
        (population-based training's exploit)."""
        for column in self.values.values():
            column[dst] = column[src]
        self.keys[dst] = dict(self.keys[src])
        if self.plateaus is not None:
            self.plateaus[dst] = copy.deepcopy(self.plateaus[src])
        self._cache = None

    def set(self, name: str, row: int, value: float) -> None:
        """Set row ``row``'s rule hyperparameter ``name``; a plateau's current lr scales
        with its lr0 (its decays so far kept), never below its min_lr."""
        if name == "lr" and self.plateaus is not None:
            plateau = self.plateaus[row]
            plateau.lr = max(plateau.min_lr, plateau.lr * value / self.values["lr"][row])
        self.values[name][row] = float(value)
        self._cache = None

    def set_key(self, name: str, row: int, value: float) -> None:
        """Set row ``row``'s schedule key ``name`` (a pure schedule's, or the momentum ramp's)."""
        self.keys[row][name] = float(value)
        self._cache = None

    def member(self, row: int) -> dict[str, Any]:
        """Row ``row``'s hyperparameters as plain numbers (for its checkpoint)."""
        return {k: v[row] for k, v in self.values.items()}
