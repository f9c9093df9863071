"""The notes' update rules as pure functions on a tensor, a dict of tensors, or a population.

``step(rule, w, dw, state, **hp) -> (w_new, state_new)`` never modifies its inputs and runs
without autograd (``w_new`` does not require grad). ``w`` is one tensor or a dict of tensors;
``state`` mirrors it (``init_state``). Formulas, exactly as in the notes ("Parameter updates"):

    sgd       w += -lr * dw
    momentum  v = mu * v - lr * dw;  w += v
    nesterov  v_prev = v;  v = mu * v - lr * dw;  w += -mu * v_prev + (1 + mu) * v
    adagrad   cache += dw**2;  w += -lr * dw / (sqrt(cache) + eps)
    rmsprop   cache = decay_rate * cache + (1 - decay_rate) * dw**2;  same w update (new cache)
    adam      t += 1;  m = beta1 m + (1 - beta1) dw;  v = beta2 v + (1 - beta2) dw**2
              w += -lr * (m / (1 - beta1**t)) / (sqrt(v / (1 - beta2**t)) + eps)

Population: any hyperparameter may be a tensor of shape (P,), one value per member of a
stacked population whose every tensor has leading dimension P; it broadcasts as (P, 1, ...).

With a constant lr, momentum and Nesterov equal torch.optim.SGD's: torch keeps the buffer
``b = mu*b + dw`` and steps ``w -= lr*b``, so ``v = -lr*b``. With a changing lr they differ:
the notes' velocity keeps the lr each gradient was added with, torch's rescales the whole
buffer by the current lr. Rescaling ``v`` by ``lr_new / lr_old`` before a step makes them equal.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from babysit._registry import Registry, unknown_name
from babysit.errors import ConfigError
from babysit.optim.hparams import RULE_HPARAMS, HParam, section

__all__ = ["HP_DEFAULTS", "RULES", "Rule", "check_hparams", "init_state", "rule", "step"]

Params = Tensor | dict[str, Tensor]
Hp = float | Tensor
# (w, dw, slots, hp, t) -> (w_new, slots_new), on one tensor; hp values already broadcast.
Update = Callable[[Tensor, Tensor, dict[str, Tensor], dict[str, Hp], int], tuple[Tensor, dict]]

# The [optim] hyperparameters by name; defaults, ranges and reasons: optim/hparams.py.
_HPARAMS: dict[str, HParam] = section("optim")
# The notes' defaults; lr has none here (step and create_optimizer need it given).
HP_DEFAULTS: dict[str, float | None] = {
    name: None if hp.required else hp.default for name, hp in _HPARAMS.items()
}


def _first_bad(hp: HParam, value: Hp) -> tuple[int | None, float] | None:
    """The first value outside hp's range as (member index or None, value), else None."""
    if isinstance(value, Tensor):
        x = value.detach().double().reshape(-1)
        ok = hp.range.holds(x)  # elementwise: the same test as a single number's
        if bool(ok.all()):
            return None
        i = int((~ok).nonzero()[0])
        return (i if value.ndim else None), float(x[i])
    v = float(value)
    return None if hp.range.holds(v) else (None, v)


def check_hparams(where: str, names: tuple[str, ...], hp: Mapping[str, Hp]) -> dict[str, Hp]:
    """Validate ``hp`` and return the values of ``names`` with the notes' defaults filled in.

    Every given name must be an [optim] hyperparameter of optim/hparams.py and in its range
    there, as a number or a (P,) tensor (every member). Raises ConfigError.
    """
    for name, value in hp.items():
        if name not in _HPARAMS:
            raise ConfigError(unknown_name("hyperparameter", name, list(_HPARAMS), where=where))
        bad = _first_bad(_HPARAMS[name], value)
        if bad is not None:
            member = "" if bad[0] is None else f" (population member {bad[0]})"
            reason = _HPARAMS[name].problem(bad[1], name=name)
            raise ConfigError(f"{where}: {name}={bad[1]!r}{member} is {reason}")
    out: dict[str, Hp] = {}
    for name in names:
        given: Hp | None = hp[name] if name in hp else HP_DEFAULTS[name]
        if given is None:
            raise ConfigError(f"{where}: {name} is required (no default); fix: pass {name}=...")
        out[name] = given
    return out


@dataclass(frozen=True)
class Rule:
    """An update rule: its per-tensor state slots, hyperparameters and update on one tensor."""

    name: str
    slots: tuple[str, ...]  # per-tensor state, zeros like w at init
    hparams: tuple[str, ...]  # from optim/hparams.py's RULE_HPARAMS
    counts_steps: bool  # keeps the iteration counter t (Adam's bias correction)
    update: Update


_RULES: Registry[Rule] = Registry("update rule", error=ConfigError)


def rule(
    name: str, *, slots: tuple[str, ...] = (), counts_steps: bool = False
) -> Callable[[Update], Update]:
    """Register an update on one tensor as rule ``name`` (adding a rule is one decorated def).

    The rule's hyperparameters come from ``RULE_HPARAMS[name]`` (optim/hparams.py): a name
    not in that table cannot be registered.
    """
    hparams = RULE_HPARAMS.get_or_raise(name).hparams
    return _RULES.register(
        name, wrap=lambda update: Rule(name, slots, hparams, counts_steps, update)
    )


@rule("sgd")
def _sgd(w: Tensor, dw: Tensor, s: dict[str, Tensor], hp: dict[str, Hp], t: int) -> tuple:
    """Vanilla update: w += -lr * dw."""
    return w - hp["lr"] * dw, {}


@rule("momentum", slots=("v",))
def _momentum(w: Tensor, dw: Tensor, s: dict[str, Tensor], hp: dict[str, Hp], t: int) -> tuple:
    """Momentum: v = mu*v - lr*dw (integrate velocity); w += v (integrate position)."""
    v = hp["mu"] * s["v"] - hp["lr"] * dw
    return w + v, {"v": v}


@rule("nesterov", slots=("v",))
def _nesterov(w: Tensor, dw: Tensor, s: dict[str, Tensor], hp: dict[str, Hp], t: int) -> tuple:
    """Nesterov in the x_ahead form: v = mu*v_prev - lr*dw; w += -mu*v_prev + (1+mu)*v."""
    mu = hp["mu"]
    v_prev = s["v"]
    v = mu * v_prev - hp["lr"] * dw
    return w - mu * v_prev + (1 + mu) * v, {"v": v}


@rule("adagrad", slots=("cache",))
def _adagrad(w: Tensor, dw: Tensor, s: dict[str, Tensor], hp: dict[str, Hp], t: int) -> tuple:
    """Adagrad: cache += dw**2; w += -lr * dw / (sqrt(cache) + eps)."""
    cache = s["cache"] + dw * dw
    return w - hp["lr"] * dw / (cache.sqrt() + hp["eps"]), {"cache": cache}


@rule("rmsprop", slots=("cache",))
def _rmsprop(w: Tensor, dw: Tensor, s: dict[str, Tensor], hp: dict[str, Hp], t: int) -> tuple:
    """RMSprop: cache = d*cache + (1-d)*dw**2 (leaky); w += -lr * dw / (sqrt(cache) + eps)."""
    d = hp["decay_rate"]
    cache = d * s["cache"] + (1 - d) * dw * dw
    return w - hp["lr"] * dw / (cache.sqrt() + hp["eps"]), {"cache": cache}


@rule("adam", slots=("m", "v"), counts_steps=True)
def _adam(w: Tensor, dw: Tensor, s: dict[str, Tensor], hp: dict[str, Hp], t: int) -> tuple:
    """Adam with bias correction; t is already incremented (1 at the first step)."""
    b1, b2 = hp["beta1"], hp["beta2"]
    m = b1 * s["m"] + (1 - b1) * dw
    v = b2 * s["v"] + (1 - b2) * dw * dw
    mt = m / (1 - b1**t)
    vt = v / (1 - b2**t)
    return w - hp["lr"] * mt / (vt.sqrt() + hp["eps"]), {"m": m, "v": v}


RULES: tuple[str, ...] = tuple(_RULES)


def _lookup(name: str) -> Rule:
    return _RULES.get_or_raise(name, where="optim.rule")


def _leaves(x: Any, where: str) -> dict[str, Tensor]:
    """A tensor as {"": tensor}, a dict of tensors as itself; anything else is refused."""
    if isinstance(x, Tensor):
        return {"": x}
    if isinstance(x, Mapping) and all(isinstance(v, Tensor) for v in x.values()):
        return dict(x)
    raise TypeError(f"{where} must be a tensor or a dict of tensors, got {type(x).__name__}")


def _rebuild(like: Any, leaves: dict[str, Tensor]) -> Params:
    return leaves[""] if isinstance(like, Tensor) else leaves


def _per_member(hp: dict[str, Hp], w: Tensor, where: str) -> dict[str, Hp]:
    """Broadcast (P,) hyperparameter tensors against w of shape (P, ...) as (P, 1, ..., 1)."""
    out: dict[str, Hp] = {}
    for name, value in hp.items():
        if not isinstance(value, Tensor) or value.ndim == 0:
            out[name] = value.to(w) if isinstance(value, Tensor) else value
            continue
        if value.ndim != 1 or w.ndim == 0 or value.shape[0] != w.shape[0]:
            raise ConfigError(
                f"{where}: {name} has shape {tuple(value.shape)} but the population tensor has "
                f"shape {tuple(w.shape)}; fix: give {name} one value per member, shape (P,)"
            )
        out[name] = value.to(w).reshape((-1,) + (1,) * (w.ndim - 1))
    return out


def init_state(rule: str, w: Params) -> dict[str, Any]:
    """Zero state for ``rule``: momentum/nesterov {"v"}, adagrad/rmsprop {"cache"},
    adam {"m", "v", "t": 0}, sgd {}; each slot mirrors ``w`` (a tensor or a dict of tensors).
    """
    spec = _lookup(rule)
    leaves = _leaves(w, "w")
    state: dict[str, Any] = {
        slot: _rebuild(w, {k: torch.zeros_like(x) for k, x in leaves.items()})
        for slot in spec.slots
    }
    if spec.counts_steps:
        state["t"] = 0
    return state


def step(
    rule: str, w: Params, dw: Params, state: Mapping[str, Any], **hp: Hp
) -> tuple[Params, dict[str, Any]]:
    """One update of ``rule``: returns (w_new, state_new); ``w``, ``dw``, ``state`` are unchanged.

    hp: lr (required), mu=0.9, decay_rate=0.99, eps=1e-8, beta1=0.9, beta2=0.999; each a
    number or a (P,) tensor for a stacked population. Names the rule does not use are checked
    and ignored, so one set of hyperparameters can drive any rule.
    """
    spec = _lookup(rule)
    where = f"update rule {rule!r}"
    hps = check_hparams(where, spec.hparams, hp)
    w_leaves, dw_leaves = _leaves(w, "w"), _leaves(dw, "dw")
    if w_leaves.keys() != dw_leaves.keys():
        raise ValueError(f"{where}: dw has keys {sorted(dw_leaves)}, w has {sorted(w_leaves)}")
    for slot in spec.slots + (("t",) if spec.counts_steps else ()):
        if slot not in state:
            raise ValueError(f"{where}: state has no {slot!r}; fix: start from init_state")
    slots = {slot: _leaves(state[slot], f"state[{slot!r}]") for slot in spec.slots}
    t = int(state["t"]) + 1 if spec.counts_steps else 0
    new_w: dict[str, Tensor] = {}
    new_slots: dict[str, dict[str, Tensor]] = {slot: {} for slot in spec.slots}
    with torch.no_grad():
        for key, x in w_leaves.items():
            g = dw_leaves[key]
            if g.shape != x.shape:
                raise ValueError(
                    f"{where}: dw{'[' + repr(key) + ']' if key else ''} has shape "
                    f"{tuple(g.shape)}, w has {tuple(x.shape)}"
                )
            s = {slot: slots[slot][key] for slot in spec.slots}
            new_w[key], updated = spec.update(x, g, s, _per_member(hps, x, where), t)
            for slot in spec.slots:
                new_slots[slot][key] = updated[slot]
    new_state: dict[str, Any] = {slot: _rebuild(w, new_slots[slot]) for slot in spec.slots}
    if spec.counts_steps:
        new_state["t"] = t
    return _rebuild(w, new_w), new_state
