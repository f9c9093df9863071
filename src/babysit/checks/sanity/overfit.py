"""The overfit-a-tiny-subset sanity check.

The notes: "Lastly and most importantly, before training on the full dataset try to
train on a tiny portion (e.g. 20 examples) of your data and make sure you can achieve
zero cost", with regularisation off. Full-batch Adam on a copy of the model until the
loss is under ``overfit_loss`` with 100 % training accuracy, or the step budget is spent.

A sequence model's subset is a few sequences (``overfit_sequences``), its accuracy the
per-token one. Where positions that look the same to any model want different targets
(two sequences of a language model that start alike and go on differently), zero cost
is out of reach: the targets are then the reachable accuracy and ``overfit_loss`` above
the reachable cross-entropy (:mod:`babysit.checks.sanity.reachable`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from babysit.checks.sanity.at_init import SanityContext
from babysit.checks.sanity.reachable import reachable
from babysit.checks.sanity.report import Check
from babysit.tasks import LossFn
from babysit.training.evaluate import Tally

__all__ = ["overfit_small"]


@dataclass
class _Run:
    """What happened while overfitting; turned into the verdict and the advice."""

    steps: int | None = None  # the step at which both targets were met
    last_step: int = 0
    loss: float = math.nan  # eval-mode loss after the last step
    acc: float = 0.0
    initial_loss: float = math.nan
    labels_changed_at: int | None = None
    no_graph: bool = False
    diverged: bool = False
    no_grad_names: list[str] = field(default_factory=list)  # trainable but outside the graph


def _evaluate(
    model: nn.Module, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor, ignore: int | None
) -> tuple[float, float]:
    """Eval-mode (no dropout) loss and accuracy (per position scored) of ``model``."""
    model.eval()
    tally = Tally("acc", ignore, x.device)
    with torch.no_grad():
        out = model(x)  # (n, C), or (n, T, C) / (n, C, T)
        loss = float(loss_fn(out, y))
        tally.add(out, y)
    model.train()
    return loss, float(tally.value() or 0.0)


def _train(
    ctx: SanityContext,
    model: nn.Module,
    named: list[tuple[str, nn.Parameter]],
    batch: tuple[torch.Tensor, torch.Tensor],
    goal: tuple[float, float],
) -> _Run:
    """Full-batch Adam steps on the tiny subset ``batch`` (its first read) until the
    ``goal`` (loss below, accuracy at least) is met or the budget is spent."""
    opts = ctx.options
    run = _Run()
    optimizer = torch.optim.Adam([p for _, p in named], lr=opts.overfit_lr)
    x0, y0 = batch
    run.initial_loss, _ = _evaluate(model, ctx.loss_fn, x0, y0, ctx.ignore_index)
    for step in range(1, opts.overfit_steps + 1):
        # Re-read through the user's pipeline: an example must keep its label.
        x, y = ctx.tiny.read() if ctx.tiny.rereads and step > 1 else (x0, y0)
        if not torch.equal(y, y0):
            run.labels_changed_at = step
            return run
        loss = ctx.loss_fn(model(x), y)
        if not loss.requires_grad:
            run.no_graph = True
            return run
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if step == 1:
            run.no_grad_names = [n for n, p in named if p.grad is None]
        optimizer.step()
        run.last_step = step
        run.loss, run.acc = _evaluate(model, ctx.loss_fn, x, y, ctx.ignore_index)
        if not math.isfinite(run.loss):
            run.diverged = True
            return run
        if run.loss < goal[0] and run.acc >= goal[1]:
            run.steps = step
            return run
    return run


def _names(names: list[str], limit: int = 4) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _advice(run: _Run, frozen: list[str], ctx: SanityContext) -> str:
    """The likely causes of a failed overfit, most specific first."""
    opts = ctx.options
    causes: list[str] = []
    if run.labels_changed_at is not None:
        causes.append(
            "the same examples came back with different labels on a second read: the "
            "Dataset / collate_fn re-draws or shuffles labels apart from the inputs; "
            "make an example keep its label"
        )
    if run.no_graph:
        causes.append(
            "the loss has no gradient: the model's output is detached from the parameters "
            "(.detach(), .data, .item(), numpy, torch.no_grad in forward) or every "
            "parameter is frozen"
        )
    if frozen:
        causes.append(
            f"{len(frozen)} parameter tensor(s) frozen (requires_grad=False): {_names(frozen)}; "
            "unfreeze them"
        )
    if run.no_grad_names:
        causes.append(
            f"no gradient reaches {_names(run.no_grad_names)}: the graph is cut before them "
            "(.detach() or .data in forward) or they are unused"
        )
    if run.diverged:
        causes.append(f"the loss became non-finite: lr {opts.overfit_lr:g} is too high; lower it")
    if not causes:
        moved = "barely moved" if run.loss > 0.9 * run.initial_loss else "fell"
        causes.append(
            f"the loss {moved} ({run.initial_loss:.3g} -> {run.loss:.3g}, train acc "
            f"{run.acc:.0%}) in {run.last_step} steps: raise overfit_lr or overfit_steps, or "
            "add capacity; labels that change between batches, a wrong update or a wrong "
            "loss also stop a model from fitting 20 examples"
        )
    return "; ".join(causes)


def overfit_small(ctx: SanityContext) -> Check:
    """Reach loss < overfit_loss and 100 % accuracy on ~20 examples (reg = 0) in the budget
    (a few sequences of a sequence model; the reachable loss and accuracy where 0 and 100 %
    are out of any model's reach)."""
    opts = ctx.options
    model = ctx.fresh_model()
    named = list(model.named_parameters())
    frozen = [n for n, p in named if not p.requires_grad]
    trainable = [(n, p) for n, p in named if p.requires_grad]
    batch = ctx.tiny.read()
    reach = reachable(*batch, ctx.ignore_index)
    goal = (opts.overfit_loss + reach.loss, reach.accuracy)
    expected = {"loss_below": goal[0], "train_acc": goal[1], "max_steps": opts.overfit_steps}
    run = _train(ctx, model, trainable, batch, goal) if trainable else _Run(no_graph=True)
    passed = run.steps is not None
    observed = {"steps": run.steps, "loss": run.loss, "train_acc": run.acc}
    details = {
        "examples": ctx.tiny.size,
        "optimizer": "adam",
        "lr": opts.overfit_lr,
        "initial_loss": run.initial_loss,
        "frozen": frozen,
        "ambiguous_positions": reach.ambiguous,  # seen alike by any model, targets differ
    }
    advice = "" if passed else _advice(run, frozen, ctx)
    return Check("overfit_small", passed, expected, observed, advice, details=details)
