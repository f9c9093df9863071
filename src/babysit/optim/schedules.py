"""Learning-rate and momentum schedules of the notes ("Annealing the learning rate").

Schedules are pure functions ``(lr0, t, **keys) -> lr`` of the time t in epochs (fractional:
``t = step / steps_per_epoch``), registered by name in ``SCHEDULES``:

    none  lr0
    step  lr0 * factor ** floor(t / every)      the notes: "by a half every 5 epochs"
    exp   lr0 * exp(-k t)
    inv   lr0 / (1 + k t)                       the notes' 1/t decay

``Plateau`` is the one stateful kind: the notes' heuristic "reduce the learning rate by a
constant (e.g. 0.5) whenever the validation error stops improving". ``momentum_at`` is the
notes' momentum schedule: "start with momentum of about 0.5 and anneal it to 0.99 or so over
multiple epochs" (a linear ramp).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from typing import Any

from babysit._registry import Registry
from babysit.errors import ConfigError
from babysit.optim.hparams import MOMENTUM_KEYS, SCHEDULE_KINDS, section

__all__ = [
    "MOMENTUM_KEYS",
    "SCHEDULES",
    "SCHEDULE_DEFAULTS",
    "SCHEDULE_KEYS",
    "Plateau",
    "check_schedule",
    "momentum_at",
    "schedule",
]

Schedule = Callable[..., float]  # (lr0, t, **keys) -> lr

# The kinds, the keys each takes, their defaults and ranges: optim/hparams.py.
_KEYS = section("schedule")
SCHEDULE_DEFAULTS: dict[str, float | None] = {name: hp.default for name, hp in _KEYS.items()}
# Keys each kind takes; every kind also takes the momentum schedule's keys.
SCHEDULE_KEYS: dict[str, tuple[str, ...]] = {
    kind: spec.keys + MOMENTUM_KEYS for kind, spec in SCHEDULE_KINDS.items()
}
# The pure kinds (every kind of SCHEDULE_KINDS but the stateful "plateau").
SCHEDULES: Registry[Schedule] = Registry("schedule", error=ConfigError)


def schedule(name: str) -> Callable[[Schedule], Schedule]:
    """Register a pure schedule ``(lr0, t, **keys) -> lr`` as kind ``name``.

    ``name`` must be a kind of SCHEDULE_KINDS (optim/hparams.py), and the function's keyword
    arguments exactly the keys the table gives it, else registering it fails.
    """
    keys = set(SCHEDULE_KINDS.get_or_raise(name).keys)

    def register(fn: Schedule) -> Schedule:
        params = inspect.signature(fn).parameters.values()
        kw = {p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}
        if kw != keys:
            raise TypeError(f"schedule {name!r} takes {sorted(kw)}; the table says {sorted(keys)}")
        SCHEDULES.add(name, fn)
        return fn

    return register


@schedule("none")
def constant(lr0: float, t: float) -> float:
    """No annealing: lr0 at every t."""
    return lr0


@schedule("step")
def step_decay(lr0: float, t: float, *, every: float, factor: float) -> float:
    """Step decay: lr0 * factor ** floor(t / every) (the notes: halve every 5 epochs)."""
    return lr0 * factor ** math.floor(t / every)


@schedule("exp")
def exponential(lr0: float, t: float, *, k: float) -> float:
    """Exponential decay: lr0 * exp(-k t)."""
    return lr0 * math.exp(-k * t)


@schedule("inv")
def inverse_time(lr0: float, t: float, *, k: float) -> float:
    """The notes' 1/t decay: lr0 / (1 + k t)."""
    return lr0 / (1 + k * t)


def check_schedule(kind: str, keys: Mapping[str, float | None]) -> dict[str, Any]:
    """Validate ``kind`` and the keys it takes; return them with defaults filled in.

    Keys the kind does not take are ignored (the config holds all of them, with defaults).
    Raises ConfigError naming the kind, key and value.
    """
    SCHEDULE_KINDS.get_or_raise(kind, where="schedule.kind")
    out: dict[str, Any] = {}
    for name in SCHEDULE_KEYS[kind]:
        value = keys.get(name, SCHEDULE_DEFAULTS[name])
        out[name] = _KEYS[name].check(value, where=f"schedule.kind={kind!r}: ")
    return out


def momentum_at(t: float, *, mu: float, mu_start: float | None, mu_epochs: float) -> float:
    """Momentum at epoch t: a linear ramp mu_start -> mu over mu_epochs, then mu.

    ``mu_start=None`` or ``mu_epochs=0`` means no ramp (mu throughout).
    """
    if mu_start is None or mu_epochs <= 0 or t >= mu_epochs:
        return mu
    return mu_start + (mu - mu_start) * (t / mu_epochs)


class Plateau:
    """Reduce lr by ``factor`` once the metric has not improved for more than ``patience`` epochs.

    An epoch improves when its metric beats the best so far by more than ``threshold``
    (absolute): ``metric > best + threshold`` in mode "max", ``metric < best - threshold`` in
    "min". After ``patience`` epochs without improvement, the next one without improvement
    multiplies lr by ``factor`` (never below ``min_lr``) and starts counting again; this is
    torch.optim.lr_scheduler.ReduceLROnPlateau with threshold_mode="abs", cooldown=0.
    A NaN metric never improves.
    """

    def __init__(
        self,
        lr0: float,
        *,
        factor: float = 0.5,
        patience: int = 3,
        threshold: float = 1e-4,
        min_lr: float = 0.0,
    ) -> None:
        keys = {"factor": factor, "patience": patience, "threshold": threshold, "min_lr": min_lr}
        check_schedule("plateau", keys)
        self.factor, self.patience = factor, int(patience)
        self.threshold, self.min_lr = threshold, min_lr
        self.lr = lr0
        self.best: float | None = None
        self.bad_epochs = 0

    def _improved(self, metric: float, mode: str) -> bool:
        if math.isnan(metric):
            return False
        if self.best is None:
            return True
        if mode == "max":
            return metric > self.best + self.threshold
        return metric < self.best - self.threshold

    def update(self, metric: float, *, mode: str) -> float:
        """Feed one epoch's validation metric (mode "max" or "min"); return the lr to use next."""
        if mode not in ("max", "min"):
            raise ConfigError(f"Plateau mode={mode!r} is unknown; use 'max' or 'min'")
        if self._improved(float(metric), mode):
            self.best, self.bad_epochs = float(metric), 0
            return self.lr
        self.bad_epochs += 1
        if self.bad_epochs > self.patience:
            self.lr = max(self.lr * self.factor, self.min_lr)
            self.bad_epochs = 0
        return self.lr

    def state_dict(self) -> dict[str, Any]:
        """Plain types only: loadable with torch.load(weights_only=True)."""
        return {"lr": self.lr, "best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.lr = float(state["lr"])
        self.best = None if state["best"] is None else float(state["best"])
        self.bad_epochs = int(state["bad_epochs"])
