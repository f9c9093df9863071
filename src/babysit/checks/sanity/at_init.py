"""The sanity checks' registry and the two checks at init: chance loss, reg raises the loss.

Each check is a function ``(ctx: SanityContext) -> Check`` registered by name with
:func:`register_check`; :func:`babysit.checks.sanity.check.sanity_check` runs them in registration
order. The notes: "Look for correct loss at chance performance" and "increasing the
regularization strength should increase the loss".
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from babysit.checks.sanity.examples import Batch, Sample
from babysit.checks.sanity.report import Check, SanityOptions

__all__ = [
    "CHANCE_REFERENCES",
    "CHECKS",
    "SanityContext",
    "chance_reference",
    "register_check",
    "seeded",
]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
RegFn = Callable[[nn.Module, float], Any]


@dataclass
class SanityContext:
    """What every check reads: the user's model (never modified), loss, data and options."""

    model: nn.Module
    loss_fn: LossFn
    num_classes: int
    chance_batch: Batch  # a few hundred examples: inputs (N, ...), labels (N,)
    tiny: Sample  # ~20 examples, read again at every overfitting step
    reg: float  # the configured strength, for the "reg dominates" warning
    reg_fn: RegFn
    chance_loss: float | None  # the caller's or the task's override
    seed: int
    options: SanityOptions

    def fresh_model(self) -> nn.Module:
        """A deep copy of the user's model in train mode (the first training step's view)."""
        return copy.deepcopy(self.model).train()

    def init_outputs(self, model: nn.Module) -> tuple[torch.Tensor, float]:
        """Scores (N, C) and data loss (reg = 0) of ``model`` on the chance batch, no grad."""
        x, y = self.chance_batch
        with torch.no_grad():
            out = model(x)
            return out, float(self.loss_fn(out, y))


CheckFn = Callable[[SanityContext], Check]
CHECKS: dict[str, CheckFn] = {}


def register_check(name: str) -> Callable[[CheckFn], CheckFn]:
    """Register a sanity check under ``name`` (runs after those registered before it)."""

    def register(fn: CheckFn) -> CheckFn:
        CHECKS[name] = fn
        return fn

    return register


@contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch for one check without touching the caller's random state."""
    if device.type != "cuda":
        devices: list[int] = []
    else:
        devices = [torch.cuda.current_device() if device.index is None else device.index]
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


# --- chance-level outputs ---------------------------------------------------------------
# The loss "at chance" is the loss of a prediction that favours no class. What that
# prediction looks like depends on what the loss takes: equal scores (zeros) for
# cross-entropy or a hinge, log(1/C) for log-probabilities (NLLLoss), 1/C for
# probabilities. The first reference whose test accepts the outputs and loss is used.
ChanceReference = Callable[[torch.Tensor, LossFn, int], torch.Tensor | None]
CHANCE_REFERENCES: dict[str, ChanceReference] = {}


def chance_reference(name: str) -> Callable[[ChanceReference], ChanceReference]:
    """Register a chance-level output builder; it returns None where it does not apply."""

    def register(fn: ChanceReference) -> ChanceReference:
        CHANCE_REFERENCES[name] = fn
        return fn

    return register


def _is_nll(loss_fn: LossFn) -> bool:
    return isinstance(loss_fn, nn.NLLLoss) or loss_fn is F.nll_loss


@chance_reference("log_probabilities")
def _uniform_log_probabilities(out: torch.Tensor, loss_fn: LossFn, c: int) -> torch.Tensor | None:
    """log(1/C) everywhere, for NLLLoss or outputs whose rows are log-probabilities."""
    rows_are_log_probs = bool(
        (out <= 0).all() and (torch.logsumexp(out.double(), dim=1).abs() < 1e-3).all()
    )
    if _is_nll(loss_fn) or rows_are_log_probs:
        return torch.full_like(out, -math.log(c))
    return None


@chance_reference("probabilities")
def _uniform_probabilities(out: torch.Tensor, loss_fn: LossFn, c: int) -> torch.Tensor | None:
    """1/C everywhere, for outputs whose rows are probabilities (softmax in the model)."""
    in_unit = bool(((out >= 0) & (out <= 1)).all())
    if in_unit and bool((out.double().sum(dim=1) - 1).abs().max() < 1e-3):
        return torch.full_like(out, 1.0 / c)
    return None


@chance_reference("scores")
def _equal_scores(out: torch.Tensor, loss_fn: LossFn, c: int) -> torch.Tensor | None:
    """All-equal scores (zeros): cross-entropy gives ln C, a margin-1 hinge (C-1)/C in mean."""
    return torch.zeros_like(out)


def _chance_value(out: torch.Tensor, y: torch.Tensor, loss_fn: LossFn, c: int) -> tuple[float, str]:
    """The data loss of the first chance-level reference that applies, and its name."""
    for name, build in CHANCE_REFERENCES.items():
        reference = build(out, loss_fn, c)
        if reference is not None:
            with torch.no_grad():
                return float(loss_fn(reference, y)), name
    raise AssertionError("the 'scores' chance reference always applies")


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


@register_check("chance_loss")
def chance_loss(ctx: SanityContext) -> Check:
    """Loss at init (reg = 0) within the relative band around the loss at chance."""
    _, y = ctx.chance_batch
    out, observed = ctx.init_outputs(ctx.fresh_model())
    if ctx.chance_loss is not None:
        expected, reference = float(ctx.chance_loss), "given"
    else:
        expected, reference = _chance_value(out, y, ctx.loss_fn, ctx.num_classes)
    tol = ctx.options.tolerance
    band = (expected - tol * abs(expected), expected + tol * abs(expected))
    passed = band[0] <= observed <= band[1]
    advice = "" if passed else _chance_advice(observed, expected, reference, _is_nll(ctx.loss_fn))
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


@register_check("reg_raises_loss")
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
