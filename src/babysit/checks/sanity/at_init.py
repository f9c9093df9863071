"""What every sanity check reads (:class:`SanityContext`) and the two checks at init.

A check is a function ``(ctx: SanityContext) -> Check``; :mod:`babysit.checks.sanity.check`
registers them in the notes' order. The notes: "Look for correct loss at chance
performance" (the reference is :mod:`babysit.checks.sanity.chance`) and "increasing the
regularization strength should increase the loss".
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from babysit.checks.sanity.chance import chance_value, is_nll
from babysit.checks.sanity.report import Check, SanityOptions
from babysit.splits import Batch, Rows
from babysit.tasks import LossFn, RegFn

__all__ = ["CheckFn", "SanityContext", "chance_loss", "reg_raises_loss"]


@dataclass
class SanityContext:
    """What every check reads: the user's model (never modified), loss, data and options."""

    model: nn.Module
    loss_fn: LossFn
    num_classes: int
    chance_batch: Batch  # a few hundred target positions: inputs (N, ...), labels (N,)/(N, T)
    tiny: Rows  # ~20 examples (a few sequences), read again at every overfitting step
    reg: float  # the configured strength, for the "reg dominates" warning
    reg_fn: RegFn
    chance_loss: float | None  # the caller's or the task's override
    seed: int
    options: SanityOptions
    ignore_index: int | None = None  # targets not scored besides negative ones

    def fresh_model(self) -> nn.Module:
        """A deep copy of the user's model in train mode (the first training step's view)."""
        return copy.deepcopy(self.model).train()

    def init_outputs(self, model: nn.Module) -> tuple[torch.Tensor, float]:
        """Scores (N, C) (or (N, T, C), ...) and data loss (reg = 0) of ``model`` on the
        chance batch, no grad."""
        x, y = self.chance_batch
        with torch.no_grad():
            out = model(x)
            return out, float(self.loss_fn(out, y))


CheckFn = Callable[[SanityContext], Check]


def _chance_advice(observed: float, expected: float, reference: str, nll: bool) -> str:
    if observed > expected:
        return (
            f"loss at init is {observed / expected:.2g}x chance: the initial scores are too "
            "large - init scale too large (the notes: small random weights; e.g. multiply the "
            "last layer's weights by 0.01), or the loss wired wrongly (softmax applied before "
            "a loss that applies it again, labels not matching the outputs' order)"
        )
    if nll and reference == "log_probabilities":
        wiring = "NLLLoss given raw scores (add log_softmax to the model, or use CrossEntropyLoss)"
    else:
        wiring = "the loss wired wrongly (a wrong reduction, or a wrong target format)"
    return (
        "loss at init is below chance: labels leaking into the inputs, "
        f"{wiring}, or a model that is not freshly initialised (pretrained weights: pass "
        "chance_loss= with the loss you expect)"
    )


def chance_loss(ctx: SanityContext) -> Check:
    """Loss at init (reg = 0) within the relative band around the loss at chance."""
    _, y = ctx.chance_batch
    out, observed = ctx.init_outputs(ctx.fresh_model())
    if ctx.chance_loss is not None:
        expected, reference = float(ctx.chance_loss), "given"
    else:
        expected, reference = chance_value(out, y, ctx.loss_fn, ctx.num_classes)
    tol = ctx.options.tolerance
    band = (expected - tol * abs(expected), expected + tol * abs(expected))
    passed = band[0] <= observed <= band[1]
    advice = "" if passed else _chance_advice(observed, expected, reference, is_nll(ctx.loss_fn))
    details = {"band": list(band), "tolerance": tol, "reference": reference, "examples": len(y)}
    return Check("chance_loss", passed, expected, observed, advice, details=details)


def _as_float(term: Any) -> float:
    return float(term.detach()) if isinstance(term, torch.Tensor) else float(term)


def _reg_advice(losses: list[float], data: float) -> str:
    terms = [loss - data for loss in losses]
    if all(t == 0 for t in terms):
        return (
            "reg_fn adds nothing at any strength: the penalty is applied to nothing (no "
            "parameter selected) or computed but not returned / not added to the loss; "
            "fix: return strength * sum(w**2) over the weights"
        )
    if any(t < 0 for t in terms):
        return (
            "the loss falls as reg grows: the reg term is applied with the wrong sign "
            "(it must be + strength * sum(w**2), added to the data loss)"
        )
    return (
        "the reg term does not grow with its strength: reg_fn ignores or misuses its "
        "strength argument (it must be proportional to it: strength * sum(w**2))"
    )


def reg_raises_loss(ctx: SanityContext) -> Check:
    """Loss at init, data loss + reg_fn(model, s), strictly increases along the reg ladder.

    The sum is taken in Python floats (float64) so a small penalty on a float32 loss
    still shows. Warns when the reg term at the configured ``reg`` exceeds
    ``reg_dominance`` x the data loss (the notes: regularisation must not overwhelm the
    data), and when the reg term carries no gradient (it could not regularise).
    """
    model = ctx.fresh_model()
    _, data = ctx.init_outputs(model)
    strengths = list(ctx.options.reg_strengths)
    losses = [data + _as_float(ctx.reg_fn(model, s)) for s in strengths]
    passed = all(b > a for a, b in itertools.pairwise(losses))
    advice = "" if passed else _reg_advice(losses, data)
    warnings: list[str] = []
    term = ctx.reg_fn(model, ctx.reg)  # the configured strength, with autograd on
    reg_loss = _as_float(term)
    if ctx.reg > 0 and abs(reg_loss) > ctx.options.reg_dominance * data:
        warnings.append(
            f"at reg = {ctx.reg:g} the reg term {reg_loss:.3g} exceeds the data loss "
            f"{data:.3g} at init: regularisation would overwhelm the data; lower reg"
        )
    trainable = any(p.requires_grad for p in model.parameters())
    if trainable and not (isinstance(term, torch.Tensor) and term.requires_grad):
        warnings.append(
            "the reg term carries no gradient (detached, .item(), or only frozen parameters): "
            "it raises the loss but cannot regularise; compute it from the parameters"
        )
    advice = "; ".join(a for a in [advice, *warnings] if a)
    details = {"data_loss": data, "reg": ctx.reg, "reg_loss": reg_loss}
    expected = {"loss": "increasing", "reg": strengths}
    return Check("reg_raises_loss", passed, expected, {"loss": losses}, advice, warnings, details)
