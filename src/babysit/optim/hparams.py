"""Every hyperparameter in one table: its default, allowed range, the notes' reason, search range.

This module does not import torch: config.py reads it, so a bad value is answered before
torch loads. Everything else reads it too, so a default or a range has one home:

    config.py            the sections' defaults, and one validator that checks every range
    optim/rules.py       HP_DEFAULTS and the checks of step()'s hyperparameters (scalars or
                         (P,) population tensors, through ``Range.holds``)
    optim/build.py       which hyperparameters each torch.optim rule takes, where momentum lives
    optim/schedules.py   the schedule kinds, their keys, defaults and checks
    models.py            the bundled models' dropout range
    tuning (search)      ``HParam.search_default``: a searched key's default distribution

``HPARAMS`` maps a dotted config key (``"optim.lr"``) to an :class:`HParam`. A range is written
as an interval, ``"(0, inf)"``, ``"[0, 1)"``; an ``int`` hyperparameter must also be a whole
number. A value out of range gets one message everywhere::

    optim.lr=-1.0 is not a number > 0; fix: set optim.lr to a number > 0, e.g. 0.001

``search_default`` is written as a ``[search.space]`` value: ``"loguniform(low, high)"``
(the notes: lr and regularisation strength on a log scale, ``10 ** uniform(-6, 1)``),
``"uniform(low, high)"`` (dropout, in the original scale), ``"choice(a, b, ...)"`` (the
notes' cross-validated values). None: no default range; a [search.space] entry must give one.

``RULE_HPARAMS`` says which hyperparameters each update rule takes and which of them a
momentum schedule drives; ``SCHEDULE_KINDS`` which keys each schedule kind takes.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from babysit._registry import Registry, unknown_name
from babysit.errors import ConfigError

__all__ = [
    "HPARAMS",
    "MOMENTUM_KEYS",
    "NAMED",
    "RULE_DEFAULT",
    "RULE_HPARAMS",
    "SCHEDULE_DEFAULT",
    "SCHEDULE_KINDS",
    "HParam",
    "Range",
    "RuleHParams",
    "ScheduleKind",
    "key_problem",
    "momentum_of",
    "section",
]

_INTERVAL = re.compile(r"^([\[(])\s*([^,\s]+)\s*,\s*([^,\s]+)\s*([\])])$")


@dataclass(frozen=True)
class Range:
    """An interval of finite numbers, e.g. ``Range.of("[0, 1)")``; ``integer``: whole numbers."""

    low: float
    high: float
    low_closed: bool
    high_closed: bool
    integer: bool = False

    @classmethod
    def of(cls, interval: str, *, integer: bool = False) -> Range:
        """Parse ``"(0, inf)"``, ``"[0, 1)"``, ...: brackets close, parentheses open."""
        match = _INTERVAL.match(interval)
        if match is None:
            raise ValueError(f"not an interval: {interval!r}; write e.g. '[0, 1)'")
        left, low, high, right = match.groups()
        return cls(float(low), float(high), left == "[", right == "]", integer)

    def holds(self, x: Any) -> Any:
        """Whether x is in the range: a bool for a number, elementwise for a tensor or array.

        Written with operators only, so a float, a numpy array and a torch tensor take the
        same test: NaN fails every comparison, +-inf fails ``abs(x) < inf``.
        """
        above = x >= self.low if self.low_closed else x > self.low
        below = x <= self.high if self.high_closed else x < self.high
        ok = above & below & (abs(x) < math.inf)
        return ok & (x % 1 == 0) if self.integer else ok

    @property
    def text(self) -> str:
        """``"a number > 0"``, ``"a number in [0, 1)"``, ``"an integer >= 1"``."""
        noun = "an integer" if self.integer else "a number"
        if math.isinf(self.high):
            return f"{noun} {'>=' if self.low_closed else '>'} {self.low:g}"
        left, right = "[" if self.low_closed else "(", "]" if self.high_closed else ")"
        return f"{noun} in {left}{self.low:g}, {self.high:g}{right}"


@dataclass(frozen=True)
class HParam:
    """One hyperparameter: dotted config key, type, default, range, the reason for the default.

    interval: the allowed range, e.g. ``"(0, inf)"``; an ``int`` one holds whole numbers only.
    default None: the feature is off unless a value is given (then it must be in range).
    required: the functions that take hyperparameters directly (``rules.step``,
    ``build.create_optimizer``) have no default for it; only the config fills one in.
    search_default: the search's default distribution for this key (see the module docstring).
    example: the value a fix suggests when the default is None.
    """

    key: str
    type: type[int] | type[float]
    default: float | None
    interval: str
    why: str
    search_default: str | None = None
    required: bool = False
    example: float | None = None
    range: Range = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "range", Range.of(self.interval, integer=self.type is int))

    @property
    def section(self) -> str:
        return self.key.partition(".")[0]

    @property
    def name(self) -> str:
        return self.key.partition(".")[2]

    @property
    def optional(self) -> bool:
        """None is allowed (and is the default): the feature it controls is off."""
        return self.default is None

    def problem(self, value: Any, *, name: str | None = None) -> str | None:
        """None when ``value`` is allowed; else ``"not <range>; fix: ..."`` naming ``name``."""
        if value is None and self.optional:
            return None
        number = isinstance(value, numbers.Real) and not isinstance(value, bool)
        if number and self.range.holds(value):
            return None
        text = self.range.text
        example = self.default if self.example is None else self.example
        hint = "" if example is None else f", e.g. {example!r}"
        return f"not {text}; fix: set {name or self.key} to {text}{hint}"

    def check(self, value: Any, *, name: str | None = None, where: str = "") -> Any:
        """``value`` if allowed, else ConfigError ``"[where]name=value is not ...; fix: ..."``."""
        reason = self.problem(value, name=name)
        if reason is not None:
            raise ConfigError(f"{where}{name or self.key}={value!r} is {reason}")
        return value


# The notes: "search for hyperparameters on log scale", learning_rate = 10 ** uniform(-6, 1),
# "the same strategy should be used for the regularization strength".
_LOG_SCALE = "loguniform(1e-6, 1e1)"

# fmt: off
_TABLE = (
    # key, type, default, range, why (the reason for the default), more
    # --- [optim]: the update rules' hyperparameters, named as in the notes -------------------
    HParam("optim.lr", float, 1e-3, "(0, inf)", "a usual first try with Adam; the notes: the "
           "one to tune first", search_default=_LOG_SCALE, required=True),
    HParam("optim.mu", float, 0.9, "[0, 1)", "momentum / nesterov; the notes: about 0.9, "
           "cross-validated over these", search_default="choice(0.5, 0.9, 0.95, 0.99)"),
    HParam("optim.decay_rate", float, 0.99, "(0, 1)", "rmsprop's leak; the notes' typical "
           "values", search_default="choice(0.9, 0.99, 0.999)"),
    HParam("optim.eps", float, 1e-8, "(0, inf)", "avoids division by zero; the Adam paper's "
           "value (the notes: usually 1e-4 to 1e-8)"),
    HParam("optim.beta1", float, 0.9, "(0, 1)", "adam; the paper's recommended value (the notes)"),
    HParam("optim.beta2", float, 0.999, "(0, 1)", "adam; the paper's recommended value"),
    # --- [schedule]: the notes' "annealing the learning rate" and momentum ramp ------------
    HParam("schedule.every", float, 5.0, "(0, inf)", "step: epochs between decays; the notes: "
           "halve every 5 epochs"),
    HParam("schedule.factor", float, 0.5, "(0, 1)", "step / plateau: multiply the lr by this; "
           "the notes: 0.5 (or 0.1 every 20 epochs)"),
    HParam("schedule.k", float, 0.1, "[0, inf)", "exp: lr0 exp(-k t); inv: lr0 / (1 + k t); "
           "t in epochs"),
    HParam("schedule.patience", int, 3, "[1, inf)", "plateau: epochs without improvement "
           "before a decay"),
    HParam("schedule.threshold", float, 1e-4, "[0, inf)", "plateau: smallest change of the "
           "validation metric that counts as improvement"),
    HParam("schedule.min_lr", float, 0.0, "[0, inf)", "the lr never decays below this"),
    HParam("schedule.mu_start", float, None, "[0, 1)", "momentum ramp mu_start -> optim.mu "
           "(None: none); the notes: start about 0.5, anneal to 0.99 or so", example=0.5),
    HParam("schedule.mu_epochs", float, 0.0, "[0, inf)", "epochs of the momentum ramp"),
    # --- [train] -------------------------------------------------------------------------------
    HParam("train.reg", float, 1e-4, "[0, inf)", "L2 strength: loss = data loss + reg * "
           "sum(w**2)", search_default=_LOG_SCALE),
    HParam("train.epochs", float, 10.0, "(0, 1e6]", "passes over the training set; a fraction "
           "trains that share of the last epoch's steps (the notes: 1 epoch or even less)"),
    HParam("train.batch_size", int, 64, "[1, inf)", "examples per step"),
    HParam("train.clip_grad", float, None, "(0, inf)", "max global gradient norm (None: no "
           "clipping)", example=1.0),
    HParam("train.early_stop", int, None, "[1, inf)", "patience in epochs on the validation "
           "metric (None: off)", example=5),
    HParam("train.eval_batch_size", int, 1024, "[1, inf)", "examples per evaluation batch"),
    HParam("train.keep_best", int, 1, "[0, inf)", "checkpoints kept by validation metric"),
    HParam("train.keep_last", int, 1, "[1, inf)", "most recent checkpoints (resume needs one)"),
    HParam("train.monitor_every", int, 50, "[1, inf)", "steps between probe capture windows"),
    HParam("train.ema", float, 0.0, "[0, 1)", "decay of the weights' exponential moving "
           "average, warmed up as min(ema, (1+t)/(10+t)) (0: off)", example=0.999),
    HParam("train.swa_start", float, None, "[0, inf)", "SWA: epochs trained before the "
           "averaging starts (None: 0.75 x train.epochs)", example=5.0),
    HParam("train.swa_lr", float, None, "(0, inf)", "SWA: constant lr once averaging starts "
           "(None: the schedule's lr)", example=0.01),
    # --- [model]: the bundled models' options that are hyperparameters ---------------------
    HParam("model.dropout", float, 0.0, "[0, 1)", "mlp / convnet: probability of dropping a "
           "unit (0: off)", search_default="uniform(0, 1)"),  # the notes: in the original scale
)
# fmt: on

HPARAMS: Registry[HParam] = Registry("hyperparameter", error=ConfigError)
for _hp in _TABLE:
    HPARAMS.add(_hp.key, _hp)


def section(name: str) -> dict[str, HParam]:
    """The hyperparameters of one config section by bare name: ``section("optim")["lr"]``."""
    return {hp.name: hp for hp in HPARAMS.values() if hp.section == name}


# --- update rules: which hyperparameters each takes, where momentum lives ------------------


@dataclass(frozen=True)
class RuleHParams:
    """What an update rule takes from [optim], and what a momentum schedule drives in it.

    momentum: the hyperparameter the momentum schedule (schedule.mu_start -> it) drives:
    ``"mu"`` for momentum / nesterov, ``"beta1"`` for adam (its first-moment leak plays
    momentum's role), None for rules without momentum (the ramp is then not applied).
    full_batch: one step on the whole training set per epoch (L-BFGS: the notes say it must
    see all the data); such a rule has no pure per-minibatch update in rules.py.
    """

    hparams: tuple[str, ...]
    momentum: str | None = None
    full_batch: bool = False


RULE_HPARAMS: Registry[RuleHParams] = Registry("update rule", error=ConfigError)
RULE_HPARAMS.add("sgd", RuleHParams(("lr",)))
RULE_HPARAMS.add("momentum", RuleHParams(("lr", "mu"), momentum="mu"))
RULE_HPARAMS.add("nesterov", RuleHParams(("lr", "mu"), momentum="mu"))
RULE_HPARAMS.add("adagrad", RuleHParams(("lr", "eps")))
RULE_HPARAMS.add("rmsprop", RuleHParams(("lr", "decay_rate", "eps")))
RULE_HPARAMS.add("adam", RuleHParams(("lr", "beta1", "beta2", "eps"), momentum="beta1"))
RULE_HPARAMS.add("lbfgs", RuleHParams(("lr",), full_batch=True))

# The notes: "Adam is currently recommended as the default algorithm to use".
RULE_DEFAULT = "adam"


def momentum_of(rule: str, values: Mapping[str, float]) -> float | None:
    """The momentum a schedule drives and the log shows for ``rule``: mu, beta1 or None."""
    key = RULE_HPARAMS.get_or_raise(rule, where="optim.rule").momentum
    return None if key is None else float(values[key])


# --- schedules: the kinds and the keys each takes ------------------------------------------

# Every kind also takes the momentum ramp's keys.
MOMENTUM_KEYS: tuple[str, ...] = ("mu_start", "mu_epochs")


@dataclass(frozen=True)
class ScheduleKind:
    """The [schedule] keys a kind takes (besides MOMENTUM_KEYS); ``stateful``: fed the
    validation metric each epoch (no pure function of t in schedules.SCHEDULES)."""

    keys: tuple[str, ...] = ()
    stateful: bool = False


SCHEDULE_KINDS: Registry[ScheduleKind] = Registry("schedule", error=ConfigError)
SCHEDULE_KINDS.add("none", ScheduleKind())
SCHEDULE_KINDS.add("step", ScheduleKind(("every", "factor")))
SCHEDULE_KINDS.add("exp", ScheduleKind(("k",)))
SCHEDULE_KINDS.add("inv", ScheduleKind(("k",)))
SCHEDULE_KINDS.add(
    "plateau", ScheduleKind(("factor", "patience", "threshold", "min_lr"), stateful=True)
)

# Constant lr unless asked: a schedule is a choice to make once the lr itself is found.
SCHEDULE_DEFAULT = "none"


# Keys whose value names an entry of a (torch-free) table; the table checks the name.
NAMED: dict[str, Registry[Any]] = {"optim.rule": RULE_HPARAMS, "schedule.kind": SCHEDULE_KINDS}


def key_problem(key: str, value: Any) -> str | None:
    """Why ``value`` is not allowed for config ``key`` by the tables here, else None.

    The one check the config (every field) and the search (every value a distribution can
    give) share: a name of ``NAMED`` must be in its table, a hyperparameter in its range.
    """
    if key in NAMED and value not in NAMED[key]:
        return unknown_name(NAMED[key].kind, value, NAMED[key].names())
    hp = HPARAMS.get(key)
    return None if hp is None else hp.problem(value)
