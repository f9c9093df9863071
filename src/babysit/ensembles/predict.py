"""Prediction: every member's outputs in one pass, and the ensemble's average of them.

Members of one architecture (``_population_model.signature``: same structure, parameter
and buffer layout) are stacked (``torch.func.stack_module_state``) and run in one call,
``vmap(functional_call)`` over the member dimension; a member alone in its architecture,
or an architecture vmap cannot batch (data-dependent control flow), runs one by one.
Both give the same numbers (tested). Members predict in eval mode, without gradients.

Averages (:data:`AVERAGES`, ``--average``), over the M members' outputs z_m (M, N, C):

    probs    log((1/M) sum_m softmax(z_m)): the log of the mean class probabilities (the
             notes: "average their predictions"); the default
    logits   (1/M) sum_m z_m: the mean score vector (a geometric mean of the
             probabilities, renormalised by the softmax)

Either result is a score vector whose softmax is the ensemble's distribution, so the
task's own loss applies to it unchanged: for cross-entropy, ``loss_fn(log p, y) = -log
p_y`` exactly (softmax(log p) = p when p sums to 1). At temperature T the ensemble's
softened distribution is ``softmax(average(z / T))`` (``probs``: the mean of the members'
softened probabilities) — distillation's soft targets.
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from babysit._registry import Registry
from babysit.errors import ConfigError
from babysit.splits import Batches, Split
from babysit.training._population_model import signature

__all__ = [
    "AVERAGES",
    "Outputs",
    "Predictor",
    "average",
    "collect",
    "scores",
    "soft_targets",
]

AverageFn = Callable[[Tensor], Tensor]  # (M, N, C) member outputs -> (N, C) ensemble scores
AVERAGES: Registry[AverageFn] = Registry("average", error=ConfigError)


@AVERAGES.register("probs")
def mean_probabilities(outputs: Tensor) -> Tensor:
    """log of the mean softmax: logsumexp_m log_softmax(z_m) - log M (stable for any z)."""
    return torch.logsumexp(torch.log_softmax(outputs, dim=-1), dim=0) - math.log(len(outputs))


@AVERAGES.register("logits")
def mean_logits(outputs: Tensor) -> Tensor:
    """The mean score vector of the members."""
    return outputs.mean(dim=0)


def average(outputs: Tensor, how: str) -> Tensor:
    """The ensemble's (N, C) scores from the members' (M, N, C) outputs (:data:`AVERAGES`)."""
    return AVERAGES.get_or_raise(how, where="--average")(outputs)


def soft_targets(outputs: Tensor, how: str, temperature: float) -> Tensor:
    """The ensemble's distribution at temperature T, as log-probabilities (N, C)."""
    return torch.log_softmax(average(outputs / temperature, how), dim=-1)


class _Group:
    """Members of one architecture: stacked and vmapped, or one model called directly."""

    def __init__(self, indices: list[int], models: list[nn.Module], device: torch.device) -> None:
        self.indices = indices
        self.models = [m.to(device).eval() for m in models]
        self.vmapped = len(models) > 1
        if self.vmapped:
            params, buffers = stack_module_state(self.models)
            self.tensors = {k: v.detach() for k, v in {**params, **buffers}.items()}
            self.template = copy.deepcopy(self.models[0]).to("meta").eval()

    def _one(self, tensors: dict[str, Tensor], x: Tensor) -> Tensor:
        return functional_call(self.template, tensors, (x,))

    def __call__(self, x: Tensor) -> Tensor:
        """(members, N, C) outputs on x."""
        if self.vmapped:
            return vmap(self._one, in_dims=(0, None))(self.tensors, x)
        return torch.stack([m(x) for m in self.models])

    def unbatch(self) -> None:
        """Run the members one by one from now on (vmap could not batch the model)."""
        self.vmapped = False


class Predictor:
    """All members' outputs on a batch: (M, B, C), in member order, in one pass."""

    def __init__(
        self,
        models: Sequence[nn.Module],
        device: torch.device,
        *,
        example: Tensor | None = None,
        vmap_groups: bool = True,
    ) -> None:
        self.device = device
        by_arch: dict[Any, list[int]] = {}
        for i, model in enumerate(models):
            key = signature(model) if vmap_groups else i
            by_arch.setdefault(key, []).append(i)
        self.groups = [_Group(ix, [models[i] for i in ix], device) for ix in by_arch.values()]
        self.size = len(models)
        self.notes: list[str] = []
        if example is not None:
            self._probe(example.to(device))

    def _probe(self, x: Tensor) -> None:
        """Run each vmapped group once; one that vmap refuses falls back to one by one."""
        for group in self.groups:
            if not group.vmapped:
                continue
            try:
                with torch.no_grad():
                    group(x)
            except Exception as exc:  # vmap refuses data-dependent control flow, some ops
                group.unbatch()
                line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                self.notes.append(
                    f"{type(group.models[0]).__name__} members run one by one (vmap: {line})"
                )

    @torch.no_grad()
    def __call__(self, x: Tensor) -> Tensor:
        x = x.to(self.device)
        parts: list[Tensor | None] = [None] * self.size
        for group in self.groups:
            out = group(x)
            for row, i in enumerate(group.indices):
                parts[i] = out[row]
        done = [p for p in parts if p is not None]
        dtype = functools.reduce(torch.promote_types, [p.dtype for p in done])
        return torch.stack([p.to(dtype) for p in done])


@dataclass(frozen=True)
class Outputs:
    """Every member's outputs on a whole split, on the CPU: M x N x C numbers (for 10
    members of 1,000 classes on 50,000 examples, 2 GB in float32)."""

    outputs: Tensor  # (M, N, C)
    targets: Tensor  # (N,)


def collect(predictor: Predictor, split: Split, batch_size: int, name: str) -> Outputs:
    """Run the members over ``split`` in order and keep their outputs (on the CPU)."""
    outs: list[Tensor] = []
    ys: list[Tensor] = []
    for x, y in Batches(split, batch_size, shuffle=False, device=predictor.device, name=name):
        outs.append(predictor(x).cpu())
        ys.append(y.cpu())
    return Outputs(torch.cat(outs, dim=1), torch.cat(ys))


def scores(
    outputs: Tensor, targets: Tensor, loss_fn: Callable[[Tensor, Tensor], Tensor]
) -> dict[str, float]:
    """``{loss, acc}`` of (N, C) scores: the task's mean loss and the fraction argmax-right."""
    loss = float(loss_fn(outputs, targets))
    acc = float((outputs.argmax(dim=1) == targets).double().mean())
    return {"loss": loss, "acc": acc}
