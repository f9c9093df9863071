"""The update:weight ratio of one optimizer step per parameter tensor, from step hooks.

Armed once per probe window: the optimizer's step pre-hook copies the parameters, its post-hook
computes ``||w_after - w_before|| / ||w_before||``. A step that a GradScaler skips never calls
``optimizer.step()``, so no hook fires and the probe waits for the next real step; with
gradient accumulation it likewise waits for the step that applies the accumulated gradient.
Without an optimizer the copy is taken when armed and compared at the next monitor step that
changed the parameters.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from babysit.monitor._stats import to_python, update_ratios

__all__ = ["UpdateProbe", "named_parameters"]

# (weights: {name: ratio}, one_dim: {name: ratio or None where ||w|| = 0})
Emit = Callable[[dict[str, float], dict[str, float | None]], None]


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


class UpdateProbe:
    """``||dw|| / ||w||`` per tensor for the first real optimizer step after :meth:`arm`."""

    def __init__(
        self,
        params: list[tuple[str, Tensor]],
        optimizer: torch.optim.Optimizer | None,
        emit: Emit,
    ) -> None:
        self._params = params
        self._emit = emit
        self._armed = False
        self._before: list[Tensor] | None = None
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
            self._snapshot()

    def after_step(self) -> None:
        """Called by every monitor step; measures here only when there is no optimizer."""
        if not self.hooked and self._before is not None:
            self._finish(skip_if_unchanged=True)

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._before = None
        self._armed = False

    def _snapshot(self) -> None:
        self._before = [p.detach().clone() for _, p in self._params]

    def _pre(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        if self._armed:
            self._armed = False
            self._snapshot()

    def _post(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        if self._before is not None:
            self._finish(skip_if_unchanged=False)

    def _finish(self, *, skip_if_unchanged: bool) -> None:
        assert self._before is not None
        ratios = update_ratios(self._before, [p for _, p in self._params])  # (P,)
        values: list[float] = to_python([ratios])[0]
        if skip_if_unchanged and all(v == 0 for v in values):
            return  # a skipped or accumulating step: keep the copy
        self._before = None
        weights: dict[str, float] = {}
        one_dim: dict[str, float | None] = {}
        for (name, p), r in zip(self._params, values, strict=True):
            if p.ndim >= 2:
                weights[name] = r
            else:  # biases often start at 0: ||w|| = 0 makes the ratio meaningless
                one_dim[name] = r if math.isfinite(r) else None
        self._emit(weights, one_dim)
