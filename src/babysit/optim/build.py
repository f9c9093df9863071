"""From config names to torch.optim: the optimizer registry and the per-step lr/mu controller.

Single models train with torch.optim (trusted, with fused/foreach fast paths); the
hyperparameter names are the notes' (``babysit.optim.rules``), mapped to torch's here:

    sgd       SGD(lr)
    momentum  SGD(lr, momentum=mu)
    nesterov  SGD(lr, momentum=mu, nesterov=True)
    adagrad   Adagrad(lr, eps=eps)                      (torch's default eps is 1e-10, ours 1e-8)
    rmsprop   RMSprop(lr, alpha=decay_rate, eps=eps)
    adam      Adam(lr, betas=(beta1, beta2), eps=eps)

torch's momentum buffer is ``b = mu*b + dw; w -= lr*b``: the notes' velocity is ``-lr*b``.
With a constant lr the trajectories are the same; when a schedule changes lr, torch rescales
the whole buffer by the new lr while the notes' velocity keeps the lr it was built with.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from babysit._registry import Registry
from babysit.errors import ConfigError
from babysit.optim.hparams import HPARAMS, MOMENTUM_KEYS, RULE_HPARAMS
from babysit.optim.rules import check_hparams
from babysit.optim.schedules import SCHEDULES, Plateau, check_schedule, momentum_at

__all__ = [
    "OPTIMIZERS",
    "LRController",
    "OptimizerSpec",
    "check_lr_fits",
    "create_optimizer",
    "list_optimizers",
    "optimizer",
]

Make = Callable[[Iterable[torch.nn.Parameter], Mapping[str, float]], torch.optim.Optimizer]

# Where a momentum schedule lands in a torch param group, by the notes' name of the
# hyperparameter it drives (RULE_HPARAMS[rule].momentum): SGD's "momentum", Adam's betas[0].
_TORCH_MOMENTUM: dict[str, str] = {"mu": "momentum", "beta1": "betas0"}


@dataclass(frozen=True)
class OptimizerSpec:
    """A rule as torch.optim: how to build it; what it takes is read from optim/hparams.py."""

    name: str
    make: Make  # (params, resolved hp) -> optimizer

    @property
    def hparams(self) -> tuple[str, ...]:
        """The [optim] keys the rule uses, e.g. ("lr", "mu")."""
        return RULE_HPARAMS[self.name].hparams

    @property
    def momentum_hparam(self) -> str | None:
        """The hyperparameter a momentum schedule drives: "mu", "beta1" or None."""
        return RULE_HPARAMS[self.name].momentum

    @property
    def momentum_key(self) -> str | None:
        """Where that momentum lives in a param group: "momentum", "betas0" or None."""
        key = self.momentum_hparam
        return None if key is None else _TORCH_MOMENTUM[key]

    @property
    def full_batch(self) -> bool:
        """One step(closure) per epoch on the whole training set (L-BFGS)."""
        return RULE_HPARAMS[self.name].full_batch


OPTIMIZERS: Registry[OptimizerSpec] = Registry("update rule", error=ConfigError)


def optimizer(name: str) -> Callable[[Make], Make]:
    """Register ``make(params, hp)`` as optimizer ``name`` (adding a rule is one decorated def).

    ``name`` must be in optim/hparams.py's RULE_HPARAMS, which says what the rule takes.
    """
    RULE_HPARAMS.get_or_raise(name)
    return OPTIMIZERS.register(name, wrap=lambda make: OptimizerSpec(name, make))


@optimizer("sgd")
def _sgd(params: Iterable[torch.nn.Parameter], hp: Mapping[str, float]) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=hp["lr"])


@optimizer("momentum")
def _momentum(
    params: Iterable[torch.nn.Parameter], hp: Mapping[str, float]
) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=hp["lr"], momentum=hp["mu"])


@optimizer("nesterov")
def _nesterov(
    params: Iterable[torch.nn.Parameter], hp: Mapping[str, float]
) -> torch.optim.Optimizer:
    if hp["mu"] <= 0:  # torch refuses Nesterov without momentum
        raise ConfigError(f"optim.mu={hp['mu']!r} with rule 'nesterov' must be > 0; fix: mu=0.9")
    return torch.optim.SGD(params, lr=hp["lr"], momentum=hp["mu"], nesterov=True)


@optimizer("adagrad")
def _adagrad(
    params: Iterable[torch.nn.Parameter], hp: Mapping[str, float]
) -> torch.optim.Optimizer:
    return torch.optim.Adagrad(params, lr=hp["lr"], eps=hp["eps"])


@optimizer("rmsprop")
def _rmsprop(
    params: Iterable[torch.nn.Parameter], hp: Mapping[str, float]
) -> torch.optim.Optimizer:
    return torch.optim.RMSprop(params, lr=hp["lr"], alpha=hp["decay_rate"], eps=hp["eps"])


@optimizer("adam")
def _adam(params: Iterable[torch.nn.Parameter], hp: Mapping[str, float]) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=hp["lr"], betas=(hp["beta1"], hp["beta2"]), eps=hp["eps"])


@optimizer("lbfgs")
def _lbfgs(params: Iterable[torch.nn.Parameter], hp: Mapping[str, float]) -> torch.optim.Optimizer:
    """Quasi-Newton: an inverse-Hessian estimate from the last 10 steps, strong-Wolfe line search.

    The notes: L-BFGS must see the entire training set (it is full-batch), so it suits small
    data sets; Newton's method itself is not offered, since a 1M-parameter model's Hessian
    would take ~3725 GB. lr scales the line search's first trial step (1.0 is usual).
    """
    return torch.optim.LBFGS(
        params, lr=hp["lr"], max_iter=20, history_size=10, line_search_fn="strong_wolfe"
    )


def list_optimizers() -> list[str]:
    """The registered rule names, in registration order."""
    return list(OPTIMIZERS)


def create_optimizer(
    params: Iterable[torch.nn.Parameter], rule: str, hp: Mapping[str, float]
) -> torch.optim.Optimizer:
    """The torch.optim optimizer for ``rule`` with the notes' hyperparameters ``hp``.

    hp keys: lr (required), mu, decay_rate, eps, beta1, beta2 (defaults 0.9, 0.99, 1e-8, 0.9,
    0.999); keys the rule does not use are checked and ignored. Raises ConfigError.
    """
    spec = OPTIMIZERS.get_or_raise(rule, where="optim.rule")
    checked = check_hparams(f"optim (rule {rule!r})", spec.hparams, hp)
    resolved = {k: float(v) for k, v in checked.items()}
    params = list(params)
    check_lr_fits(params, rule, resolved)
    return spec.make(params, resolved)


# The largest number each rule's torch.optim step multiplies an update by, as a Python float
# that torch converts to the parameters' dtype (an overflow there is a RuntimeError): lr,
# except Adam, whose bias-corrected first step is lr / (1 - beta1).
_STEP_SCALE: dict[str, Callable[[Mapping[str, float]], float]] = {
    "adam": lambda hp: hp["lr"] / (1 - hp["beta1"]),
}


def check_lr_fits(params: Iterable[Any], rule: str, hp: Mapping[str, float]) -> None:
    """ConfigError unless ``rule``'s step scale (lr; Adam: lr / (1 - beta1)) is a finite
    number of the parameters' floating dtype: optim.lr = 1e39 is refused for float32 (whose
    largest value is 3.4e38) instead of crashing inside torch.optim's first step."""
    dtypes = {p.dtype for p in params if isinstance(p, torch.Tensor) and p.is_floating_point()}
    if not dtypes:
        return
    dtype = min(dtypes, key=lambda d: torch.finfo(d).max)
    largest = torch.finfo(dtype).max
    scale = _STEP_SCALE.get(rule, lambda h: h["lr"])(hp)
    if scale <= largest:
        return
    name = str(dtype).removeprefix("torch.")
    how = f"lr / (1 - beta1) = {scale:.3g}" if rule in _STEP_SCALE else "lr"
    raise ConfigError(
        f"optim.lr = {hp['lr']!r} is too large for the model's {name} parameters: rule "
        f"{rule!r} scales each update by {how}, and {name} holds at most {largest:.3g}; "
        f"fix: set optim.lr to at most {largest * (hp['lr'] / scale):.3g} (usual values: 1e-4..1)"
    )


def _set_momentum(group: dict[str, Any], mu: float) -> None:
    group["momentum"] = mu


def _set_beta1(group: dict[str, Any], mu: float) -> None:
    group["betas"] = (mu, group["betas"][1])


# How a momentum value reaches a param group, by OptimizerSpec.momentum_key.
_MOMENTUM_SETTERS: dict[str, Callable[[dict[str, Any], float], None]] = {
    "momentum": _set_momentum,
    "betas0": _set_beta1,
}


class LRController:
    """Drives lr (and mu) of a torch optimizer from a schedule, per step; has state_dict().

    ``at_step(step)`` sets every param group's lr (and momentum, when ``mu`` is given) for
    epoch ``t = step / steps_per_epoch`` and returns ``(lr, mu)`` for the metrics log.
    kind: a ``SCHEDULES`` name or "plateau" (fed by ``end_epoch``); keys: the schedule's keys
    (every, factor, k, patience, threshold, min_lr, mu_start, mu_epochs), defaults filled in.
    momentum_key: "momentum" (SGD) or "betas0" (Adam's beta1); None detects it from the
    optimizer's param groups. With ``mu=None`` the optimizer's momentum is left alone.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        kind: str,
        lr0: float,
        steps_per_epoch: int,
        mu: float | None,
        keys: Mapping[str, float | None],
        momentum_key: str | None = None,
    ) -> None:
        self.keys = check_schedule(kind, keys)
        HPARAMS["optim.lr"].check(lr0, name="lr0", where="schedule: ")  # optim.lr's range
        if steps_per_epoch < 1:
            raise ConfigError(f"schedule: steps_per_epoch={steps_per_epoch!r} must be >= 1")
        self.optimizer, self.kind, self.lr0 = optimizer, kind, float(lr0)
        self.steps_per_epoch, self.mu = int(steps_per_epoch), mu
        self.last_step: int | None = None
        self._fn_keys = {k: v for k, v in self.keys.items() if k not in MOMENTUM_KEYS}
        self._set_mu = self._momentum_setter(momentum_key) if mu is not None else None
        # "plateau" is the one kind with state; the others are pure functions of t.
        self._plateau = (
            Plateau(
                lr0,
                **{k: self.keys[k] for k in ("factor", "patience", "threshold", "min_lr")},
            )
            if kind == "plateau"
            else None
        )

    def _momentum_setter(self, key: str | None) -> Callable[[dict[str, Any], float], None]:
        group = self.optimizer.param_groups[0]
        if key is None:
            key = "betas0" if "betas" in group else "momentum" if "momentum" in group else None
        if key not in _MOMENTUM_SETTERS:
            raise ConfigError(
                f"schedule: mu is given but {type(self.optimizer).__name__} has no momentum "
                f"(momentum_key={key!r}); fix: pass mu=None for this rule"
            )
        return _MOMENTUM_SETTERS[key]

    def at_step(self, step: int) -> tuple[float, float | None]:
        """Set lr (and mu) of every param group for this step; return (lr, mu)."""
        t = step / self.steps_per_epoch
        if self._plateau is not None:
            lr = self._plateau.lr
        else:
            lr = SCHEDULES[self.kind](self.lr0, t, **self._fn_keys)
        mu = None
        if self.mu is not None:
            mu = momentum_at(
                t, mu=self.mu, mu_start=self.keys["mu_start"], mu_epochs=self.keys["mu_epochs"]
            )
        for group in self.optimizer.param_groups:
            group["lr"] = lr
            if mu is not None and self._set_mu is not None:
                self._set_mu(group, mu)
        self.last_step = step
        return lr, mu

    def end_epoch(self, metric: float, *, mode: str) -> None:
        """Feed the epoch's validation metric ("max" or "min"); only "plateau" uses it."""
        if self._plateau is not None:
            self._plateau.update(metric, mode=mode)

    def state_dict(self) -> dict[str, Any]:
        """Plain types only (loadable with torch.load(weights_only=True))."""
        return {
            "kind": self.kind,
            "lr0": self.lr0,
            "last_step": self.last_step,
            "plateau": None if self._plateau is None else self._plateau.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a state_dict of a controller of the same kind, and re-apply its last step."""
        if state["kind"] != self.kind:
            raise ConfigError(
                f"schedule state is of kind {state['kind']!r}, this run's is {self.kind!r}; "
                "fix: resume with the same schedule.kind"
            )
        if self._plateau is not None and state["plateau"] is not None:
            self._plateau.load_state_dict(state["plateau"])
        self.last_step = state["last_step"]
        if self.last_step is not None:
            self.at_step(self.last_step)
