"""What one optimizer step does to each parameter tensor, read by the optimizer's step hooks.

Armed once per probe window, for the next real optimizer step k:

- the step pre-hook copies the parameters and notes which ones hold a gradient (a parameter
  the optimizer holds whose ``.grad`` is None was not reached by the loss: frozen, or unused);
- the step post-hook gives ``||w_after - w_before|| / ||w_before||`` (the update ratio) and
  ``||w_before||`` (the weight norm) of every tensor that had a gradient;
- then a tensor hook on each such parameter fires at the next backward pass, *before* autograd
  adds the new gradient to ``.grad``: what ``.grad`` still holds then is what the user's loop
  left of step k's gradient. ``zero_grad()`` leaves None or zeros (carry-over 0); a loop that
  never zeroes leaves step k's gradient itself (carry-over 1), which autograd then adds to.
  The carry-over ``||.grad before backward k+1|| / ||.grad at step k||`` is handed over at
  step k+1 (gradient accumulation over micro-batches zeroes after each step: also 0).

A step that a GradScaler skips never calls ``optimizer.step()``, so no hook fires and the probe
waits for the next real step; with gradient accumulation it likewise waits for the step that
applies the accumulated gradient. ``optimizer.step(closure)`` (Lightning, LBFGS) computes the
gradients inside the step, after the pre-hook: then both readings of ``.grad`` move to the
post-hook. Without an optimizer the copy is taken when armed and compared
at the next monitor step that changed the parameters (no gradient is read then).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from babysit.monitor._stats import to_python, update_ratios

__all__ = ["StepReading", "UpdateProbe", "named_parameters", "training_setup"]


@dataclass
class StepReading:
    """One measured optimizer step, per parameter name (weights: tensors with ndim >= 2)."""

    ratios: dict[str, float] = field(default_factory=dict)  # weights: ||dw|| / ||w||
    one_dim: dict[str, float | None] = field(default_factory=dict)  # None where ||w|| = 0
    weight_norms: dict[str, float] = field(default_factory=dict)  # weights: ||w|| before
    no_grad: list[str] = field(default_factory=list)  # held by the optimizer, .grad None


def named_parameters(
    model: nn.Module, optimizer: torch.optim.Optimizer | None
) -> list[tuple[str, Tensor]]:
    """The tensors the optimizer updates (else the model's trainable ones), with model names."""
    names = {id(p): n for n, p in model.named_parameters()}
    if optimizer is None:
        params = [p for p in model.parameters() if p.requires_grad]
    else:
        params = [p for group in optimizer.param_groups for p in group["params"]]
    return [(names.get(id(p), f"param{i}"), p) for i, p in enumerate(params)]


def training_setup(model: nn.Module, optimizer: torch.optim.Optimizer | None) -> dict[str, Any]:
    """What the diagnoses need to know of the setup: the optimizer's class and largest
    ``weight_decay`` (AdamW's decoupled one included), and the parameters frozen by
    ``requires_grad=False``."""
    groups = optimizer.param_groups if optimizer is not None else []
    return {
        "optimizer": None if optimizer is None else type(optimizer).__name__,
        "weight_decay": max((float(g.get("weight_decay") or 0.0) for g in groups), default=None),
        "frozen": [name for name, p in model.named_parameters() if not p.requires_grad],
    }


class UpdateProbe:
    """Update ratios, weight norms and gradient carry-over of the next real step after arm()."""

    def __init__(
        self,
        params: list[tuple[str, Tensor]],
        optimizer: torch.optim.Optimizer | None,
        emit: Callable[[StepReading], None],
        emit_carryover: Callable[[dict[str, float]], None],
    ) -> None:
        self._params = params
        self._emit, self._emit_carryover = emit, emit_carryover
        self._armed = False
        self._before: list[Tensor] | None = None
        self._measured: list[int] = []  # indices of the params that had a gradient
        self._step_grads: list[Tensor] = []  # (,) ||.grad|| at the measured step, per index
        self._stale: dict[int, Tensor] = {}  # (,) ||.grad|| found before the next backward
        self._grad_hooks: list[RemovableHandle] = []
        self._closure = False  # the current step got a closure: gradients appear inside it
        self._handles: list[RemovableHandle] = []
        if optimizer is not None:
            self._handles = [
                optimizer.register_step_pre_hook(self._pre),
                optimizer.register_step_post_hook(self._post),
            ]
        self.hooked = optimizer is not None  # measured by step hooks (else at monitor steps)

    def arm(self) -> None:
        """Measure the next optimizer step (without an optimizer: from now to the next change)."""
        if self.hooked:
            self._armed = True
        else:
            self._measured = list(range(len(self._params)))
            self._before = [p.detach().clone() for _, p in self._params]

    def after_step(self) -> None:
        """Called by every monitor step; measures here only when there is no optimizer."""
        if not self.hooked and self._before is not None:
            self._finish(skip_if_unchanged=True)

    def close(self) -> None:
        for handle in [*self._handles, *self._grad_hooks]:
            handle.remove()
        self._handles.clear()
        self._grad_hooks.clear()
        self._before = None
        self._armed = False

    # --- the optimizer's hooks -------------------------------------------------------------
    def _pre(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self._closure = kwargs.get("closure", args[0] if args else None) is not None
        if self._closure:  # the gradients are computed inside step(): read them in _post
            if self._armed:
                self._armed = False
                self._measured = list(range(len(self._params)))
                self._before = [p.detach().clone() for _, p in self._params]
            return
        if self._grad_hooks:
            self._finish_carryover()
        if not self._armed:
            return
        self._armed = False
        self._take_grads()
        self._before = [self._params[i][1].detach().clone() for i in self._measured]

    def _take_grads(self) -> None:
        """Which parameters hold a gradient now, and its norm (before the update applies it)."""
        self._measured = [i for i, (_, p) in enumerate(self._params) if p.grad is not None]
        self._step_grads = [
            torch.linalg.vector_norm(self._params[i][1].grad.detach().float())  # type: ignore[union-attr]
            for i in self._measured
        ]

    def _post(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        if self._closure:
            # step(closure) (Lightning, LBFGS): the closure's backward ran after _pre, so the
            # last step's carry-over and this step's gradients are read now; the update
            # changes the weights, not .grad, so the norms are those the step applied
            if self._grad_hooks:
                self._finish_carryover()
            if self._before is not None:
                before = dict(zip(self._measured, self._before, strict=True))
                self._take_grads()
                self._before = [before[i] for i in self._measured]
        if self._before is not None:
            self._finish(skip_if_unchanged=False)
            self._watch_next_backward()

    # --- measurements ------------------------------------------------------------------------
    def _finish(self, *, skip_if_unchanged: bool) -> None:
        assert self._before is not None
        after = [self._params[i][1] for i in self._measured]
        ratios = update_ratios(self._before, after)  # (P,)
        norms = [torch.linalg.vector_norm(b.float()) for b in self._before]
        got = to_python([ratios, *norms]) if norms else [[]]
        values: list[float] = got[0]
        norm_values: list[float] = got[1:]
        if skip_if_unchanged and all(v == 0 for v in values):
            return  # a skipped or accumulating step: keep the copy
        self._before = None
        reading = StepReading()
        measured = set(self._measured)
        reading.no_grad = [n for i, (n, _) in enumerate(self._params) if i not in measured]
        for i, r, w in zip(self._measured, values, norm_values, strict=True):
            name, p = self._params[i]
            if p.ndim >= 2:
                reading.ratios[name] = r
                reading.weight_norms[name] = w
            else:  # biases often start at 0: ||w|| = 0 makes the ratio meaningless
                reading.one_dim[name] = r if math.isfinite(r) else None
        self._emit(reading)

    def _watch_next_backward(self) -> None:
        """Hook every measured parameter: read its ``.grad`` before the next gradient lands."""
        self._stale = {}
        for i in self._measured:
            p = self._params[i][1]

            def seen(grad: Tensor, i: int = i, p: Tensor = p) -> None:
                if i not in self._stale:  # the first backward after the step only
                    old = p.grad
                    zero = torch.zeros((), device=grad.device)
                    self._stale[i] = (
                        zero if old is None else torch.linalg.vector_norm(old.detach().float())
                    )

            self._grad_hooks.append(p.register_hook(seen))

    def _finish_carryover(self) -> None:
        """At the next step: per parameter, the share of the last step's gradient still held."""
        for handle in self._grad_hooks:
            handle.remove()
        self._grad_hooks.clear()
        pairs = [
            (self._params[i][0], self._stale[i], g)
            for i, g in zip(self._measured, self._step_grads, strict=True)
            if i in self._stale
        ]
        if not pairs:
            return
        got = to_python([t for _, stale, g in pairs for t in (stale, g)])
        self._emit_carryover(
            {
                name: (s / g if g > 0 else 0.0)
                for (name, _, _), s, g in zip(pairs, got[0::2], got[1::2], strict=True)
            }
        )
