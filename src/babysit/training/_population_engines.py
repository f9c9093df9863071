"""Per-member losses and gradients of a stacked population, three ways with one result.

    stacked     an nn.Sequential of known layers (_population_stacked): batched products
    vmap        any model torch.func.vmap can batch: vmap over functional_call
    sequential  the fallback: one member after another, functional_call on its slice

The batched engines compute the per-member losses L (P,) in one forward and take the
gradient of their sum in one backward: member i's parameters reach only L_i, so
d(sum_j L_j)/dW_i = dL_i/dW_i (the same gradient as ``vmap(grad(loss))``, without the
grad transform). A member whose loss is NaN/inf is not ``live``: it is masked out of that
sum (its gradient may still be NaN, 0 * NaN, but stays in its own rows) and the loop
discards its update.

Every engine computes loss = task.loss_fn(out, y) + task.reg_fn(model, reg) per member,
the penalty taken as 0 where reg is 0 (as the trainer, which skips it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from babysit._registry import Registry
from babysit.errors import ConfigError
from babysit.tasks import Task
from babysit.training._population_model import Stack
from babysit.training._population_stacked import stacked_fn, stacked_forward, supports

__all__ = [
    "ENGINES",
    "Engine",
    "EngineSpec",
    "Losses",
    "Sequential",
    "Stacked",
    "Vmapped",
    "choose_engine",
]

Tensors = dict[str, Tensor]


class Losses(NamedTuple):
    """One minibatch's results for every member."""

    out: Tensor  # (P, B, ...) model outputs
    data: Tensor  # (P,) data loss
    reg: Tensor  # (P,) penalty reg_fn(model, reg)


class _Member(nn.Module):
    """One member as a function of its tensors: (x, y, reg) -> (out, data loss, penalty)."""

    def __init__(self, model: nn.Module, task: Task) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = task.loss_fn
        self.reg_fn: Callable[[nn.Module, Any], Tensor] = task.reg_fn  # strength: a 0-dim tensor

    def forward(self, x: Tensor, y: Tensor, reg: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        out = self.model(x)
        return out, self.loss_fn(out, y), self.reg_fn(self.model, reg)


class _Penalty(nn.Module):
    """A member's penalty as a function of its tensors: reg -> reg_fn(model, reg)."""

    def __init__(self, model: nn.Module, task: Task) -> None:
        super().__init__()
        self.model = model
        self.reg_fn: Callable[[nn.Module, Any], Tensor] = task.reg_fn  # strength: a 0-dim tensor

    def forward(self, reg: Tensor) -> Tensor:
        return self.reg_fn(self.model, reg)


def _named(tensors: Tensors) -> Tensors:
    """Tensors of the model as tensors of a wrapper holding it as ``model``."""
    return {f"model.{k}": v for k, v in tensors.items()}


def _penalty(pen: Tensor, reg: Tensor) -> Tensor:
    return torch.where(reg > 0, pen, torch.zeros_like(pen))


class Engine:
    """Computes a population's losses (and gradients) from its stacked tensors."""

    name = ""

    def __init__(self, template: nn.Module, task: Task) -> None:
        self.template, self.task = template, task
        self.member = _Member(template, task)

    def forward(
        self, tensors: Tensors, x: Tensor, y: Tensor, reg: Tensor, per_member: bool
    ) -> Losses:
        """Every member's outputs, data losses and penalties (autograd as enabled)."""
        raise NotImplementedError

    def grads(
        self,
        params: Tensors,
        buffers: Tensors,
        batch: tuple[Tensor, Tensor, bool],
        reg: Tensor,
        active: Tensor,
    ) -> tuple[Losses, Tensor, Tensors]:
        """(losses, live, gradients) in training mode; live = active & the loss is finite."""
        x, y, per_member = batch
        self.template.train()
        leaves = {k: v.detach().requires_grad_() for k, v in params.items()}
        with torch.enable_grad():
            losses = self.forward({**leaves, **buffers}, x, y, reg, per_member)
            loss = losses.data + losses.reg
            live = active & torch.isfinite(loss)
            total = torch.where(live, loss, torch.zeros_like(loss)).sum()
            found = torch.autograd.grad(total, list(leaves.values()), allow_unused=True)
        grads = {
            k: torch.zeros_like(v) if g is None else g
            for (k, v), g in zip(leaves.items(), found, strict=True)
        }
        self.add_penalty_grads(grads, params, reg)
        return Losses(losses.out.detach(), losses.data.detach(), losses.reg.detach()), live, grads

    def add_penalty_grads(self, grads: Tensors, params: Tensors, reg: Tensor) -> None:
        """Add the penalty's gradient where forward() left it out of the graph (no-op here)."""

    @torch.no_grad()
    def evaluate(self, params: Tensors, buffers: Tensors, x: Tensor, y: Tensor) -> Losses:
        """Outputs and data losses in eval mode (the penalty is not computed: zeros)."""
        self.template.eval()
        n = next(iter(params.values())).shape[0]
        reg = torch.zeros(n, device=x.device)
        return self.forward({**params, **buffers}, x, y, reg, False)


class Vmapped(Engine):
    """vmap over functional_call: each member's dropout draws its own randomness."""

    name = "vmap"

    def forward(
        self, tensors: Tensors, x: Tensor, y: Tensor, reg: Tensor, per_member: bool
    ) -> Losses:
        named = _named(tensors)
        data_dim = 0 if per_member else None

        def one(t: Tensors, xi: Tensor, yi: Tensor, ri: Tensor) -> tuple[Tensor, Tensor, Tensor]:
            return functional_call(self.member, t, (xi, yi, ri))

        batched = vmap(one, in_dims=(0, data_dim, data_dim, 0), randomness="different")
        out, data, pen = batched(named, x, y, reg)
        return Losses(out, data, _penalty(pen, reg))


class Stacked(Engine):
    """The fast path for an nn.Sequential of known layers (see _population_stacked)."""

    name = "stacked"

    def __init__(self, template: nn.Module, task: Task) -> None:
        super().__init__(template, task)
        self.loss = stacked_fn(task.loss_fn)
        self.reg = stacked_fn(task.reg_fn)

    def add_penalty_grads(self, grads: Tensors, params: Tensors, reg: Tensor) -> None:
        if self.reg is not None and self.reg.grad is not None:
            self.reg.grad(grads, params, torch.where(reg > 0, reg, torch.zeros_like(reg)))

    def forward(
        self, tensors: Tensors, x: Tensor, y: Tensor, reg: Tensor, per_member: bool
    ) -> Losses:
        out = stacked_forward(self.template, tensors, x, per_member=per_member)
        if self.loss is not None and not y.is_floating_point():
            data = self.loss.stacked(out, y)
        else:
            data = vmap(self.task.loss_fn, in_dims=(0, 0 if per_member else None))(out, y)
        if self.reg is not None:
            params = {k: v for k, v in tensors.items() if not k.endswith(".rate")}
            with torch.set_grad_enabled(torch.is_grad_enabled() and self.reg.grad is None):
                pen = self.reg.stacked(params, reg)
        else:
            penalty = _Penalty(self.template, self.task)

            def one(t: Tensors, ri: Tensor) -> Tensor:
                return functional_call(penalty, t, (ri,))

            pen = vmap(one, randomness="different")(_named(tensors), reg)
        return Losses(out, data, _penalty(pen, reg))


class Sequential(Engine):
    """One member after another (a model vmap cannot batch); the same results, slower."""

    name = "sequential"

    def _one(
        self, tensors: Tensors, i: int, batch: tuple[Tensor, Tensor, bool], reg: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Member i's (out, data loss, penalty) from its own tensors."""
        x, y, per_member = batch
        xi, yi = (x[i], y[i]) if per_member else (x, y)
        out, data, pen = functional_call(self.member, _named(tensors), (xi, yi, reg[i]))
        return out, data, _penalty(pen, reg[i])

    def forward(
        self, tensors: Tensors, x: Tensor, y: Tensor, reg: Tensor, per_member: bool
    ) -> Losses:
        batch = (x, y, per_member)
        parts = [
            self._one({k: v[i] for k, v in tensors.items()}, i, batch, reg) for i in range(len(reg))
        ]
        return Losses(*(torch.stack(list(p)) for p in zip(*parts, strict=True)))

    def grads(
        self,
        params: Tensors,
        buffers: Tensors,
        batch: tuple[Tensor, Tensor, bool],
        reg: Tensor,
        active: Tensor,
    ) -> tuple[Losses, Tensor, Tensors]:
        """Each member its own backward (one graph over P slices would cost P full-size
        gradients); a member with a NaN/inf loss gets NaN gradients, discarded as above."""
        self.template.train()
        parts: list[tuple[Tensor, Tensor, Tensor]] = []
        grads: dict[str, list[Tensor]] = {k: [] for k in params}
        for i in range(len(reg)):
            leaves = {k: v[i].detach().requires_grad_() for k, v in params.items()}
            own = {**leaves, **{k: b[i] for k, b in buffers.items()}}
            with torch.enable_grad():
                out, data, pen = self._one(own, i, batch, reg)
                found = torch.autograd.grad(data + pen, list(leaves.values()), allow_unused=True)
            for (k, v), g in zip(leaves.items(), found, strict=True):
                grads[k].append(torch.zeros_like(v) if g is None else g)
            parts.append((out.detach(), data.detach(), pen.detach()))
        losses = Losses(*(torch.stack(list(p)) for p in zip(*parts, strict=True)))
        live = active & torch.isfinite(losses.data + losses.reg)
        return losses, live, {k: torch.stack(g) for k, g in grads.items()}


@dataclass(frozen=True)
class EngineSpec:
    """An engine and whether it can run a (member) model."""

    cls: type[Engine]
    applies: Callable[[nn.Module], bool]


def _any_model(model: nn.Module) -> bool:
    return True


# The engines in the order "auto" tries them.
ENGINES: Registry[EngineSpec] = Registry("population engine", error=ConfigError)
ENGINES.add("stacked", EngineSpec(Stacked, supports))
ENGINES.add("vmap", EngineSpec(Vmapped, _any_model))
ENGINES.add("sequential", EngineSpec(Sequential, _any_model))


def _probe(engine: Engine, stack: Stack, example: tuple[Tensor, Tensor]) -> None:
    """A backward and an evaluation of two members on two examples, shared by the members
    and one copy each (members with their own data order); raises if the engine cannot.
    On copies: a model may update its buffers in place (batch norm's running statistics)."""
    rows = min(2, next(iter(stack.params.values())).shape[0])
    params = {k: v[:rows].clone() for k, v in stack.params.items()}
    buffers = {k: v[:rows].clone() for k, v in stack.buffers.items()}
    x, y = example
    reg = torch.zeros(rows, dtype=next(iter(params.values())).dtype, device=x.device)
    active = torch.ones(rows, dtype=torch.bool, device=x.device)
    engine.grads(params, buffers, (x, y, False), reg, active)
    own = (x.expand(rows, *x.shape), y.expand(rows, *y.shape), True)
    engine.grads(params, buffers, own, reg, active)
    engine.evaluate(params, buffers, x, y)


def choose_engine(
    name: str, stack: Stack, task: Task, example: tuple[Tensor, Tensor]
) -> tuple[Engine, list[str]]:
    """The engine ``name`` ("auto": the first of ENGINES that can run the model) and notes.

    "auto" tries each engine that applies on two members and two examples; one that raises
    (vmap: data-dependent control flow, an op without a batching rule) is passed over with
    a note naming the reason, down to "sequential", which runs any model.
    """
    if name != "auto":
        spec = ENGINES.get_or_raise(name, where="population engine")
        if not spec.applies(stack.template):
            raise ConfigError(
                f"population engine {name!r} cannot run {type(stack.template).__name__} "
                "(an nn.Sequential of known layers only); fix: engine='auto'"
            )
        return spec.cls(stack.template, task), []
    notes: list[str] = []
    model = type(stack.template).__name__
    for key, spec in ENGINES.items():
        if not spec.applies(stack.template):
            continue
        engine = spec.cls(stack.template, task)
        if key == "sequential":
            return engine, notes
        try:
            _probe(engine, stack, example)
        except torch.OutOfMemoryError:  # too many members, not a model vmap cannot batch
            raise
        except Exception as exc:  # vmap's refusals are RuntimeErrors, a model's may be any
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            notes.append(f"population: {key} cannot batch {model} ({first})")
            continue
        return engine, notes
    raise AssertionError("the sequential engine runs any model")  # pragma: no cover
