"""Sanity checks before training: chance loss, regularisation raises the loss, overfit 20 examples.

The notes' "Before learning: sanity checks": (1) with reg = 0 the loss at init is the
loss at chance (softmax with 10 classes: -ln(1/10) = 2.302); (2) raising the
regularisation strength raises the loss; (3) the model fits a tiny subset (~20
examples) to zero cost. Input problems (labels outside [0, C), non-finite inputs, an
output that is not (N, C), a non-finite loss at init) raise :class:`SanityInputError`
before any check runs.

Sequence models (a language model: (N, T) targets, (N, T, C) or (N, C, T) outputs) are
checked per token: the chance loss is ln(vocabulary) per token, the overfit subset is a
few sequences, and targets below 0 or equal to ``ignore_index`` are positions the loss
ignores. Every check works on a deep copy of the model, with its own
seeded random state, so neither the user's weights nor their RNG state change.

Example::

    report = sanity_check(model, nn.CrossEntropyLoss(), (x, y), num_classes=10)
    print(report)                      # check, expected, observed, verdict, advice
    assert report.passed, report
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import asdict
from typing import Any

import torch
from torch import nn

from babysit._registry import Registry
from babysit.checks.sanity import at_init, overfit
from babysit.checks.sanity.at_init import CheckFn, SanityContext
from babysit.checks.sanity.chance import positions
from babysit.checks.sanity.inputs import check_labels, examples, probe
from babysit.checks.sanity.report import Check, SanityInputError, SanityOptions, SanityReport
from babysit.splits import Split, seeded, train_view
from babysit.tasks import LossFn, RegFn, Task, l2_weights
from babysit.training.evaluate import class_dim

# public names: re-exported by this package's __init__.py (its __all__)

# The notes' order: the loss at init, then regularisation, then overfitting a tiny subset.
ORDER: tuple[tuple[str, CheckFn], ...] = (
    ("chance_loss", at_init.chance_loss),
    ("reg_raises_loss", at_init.reg_raises_loss),
    ("overfit_small", overfit.overfit_small),
)
CHECKS: Registry[CheckFn] = Registry("sanity check")
for _name, _check in ORDER:
    CHECKS.add(_name, _check)


def register_check(name: str) -> Callable[[CheckFn], CheckFn]:
    """Register a sanity check under ``name``; it runs after the built-in ones (:data:`ORDER`)
    and those registered before it."""
    return CHECKS.register(name)


def _device(model: nn.Module) -> torch.device:
    tensor = next(model.parameters(), None)
    return tensor.device if tensor is not None else torch.device("cpu")


def sanity_check(
    model: nn.Module,
    loss_fn: LossFn,
    train: Split,
    *,
    num_classes: int,
    reg: float = 1e-3,
    reg_fn: RegFn = l2_weights,
    chance_loss: float | None = None,
    seed: int = 0,
    options: SanityOptions | None = None,
    ignore_index: int | None = None,
) -> SanityReport:
    """Run every registered sanity check on a copy of ``model``; see the module docstring.

    train: ``(inputs, targets)`` tensors, a Dataset or a DataLoader; a seeded random
    subset of ``options.chance_examples`` examples (target positions) gives the loss at
    init, and one of ``options.overfit_examples`` (``overfit_sequences`` for (N, T)
    targets) is overfitted (re-read through the loader at every step).
    num_classes: the number of classes (a language model: its vocabulary).
    reg: the strength training will use (the "reg dominates the data loss" warning).
    reg_fn: ``(model, strength) -> scalar`` added to the data loss; the user's own is checked.
    chance_loss: the expected loss at init, overriding the derived one.
    ignore_index: a target the loss ignores besides negative ones (a padding id).
    Raises SanityInputError on unusable input, before any check runs.
    """
    opts = options or SanityOptions()
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise SanityInputError(
            f"sanity: num_classes={num_classes!r} must be an integer >= 2; "
            "fix: pass the number of classes of the task"
        )
    device = _device(model)
    with seeded(seed, device):  # a Dataset may draw random numbers while it is read
        chance_batch = examples(train, opts.chance_examples, seed=seed, device=device).read()
        check_labels(*chance_batch, num_classes, "train", ignore_index)
        x, y = chance_batch
        keep = positions(y, opts.chance_examples)  # sequences: ~chance_examples tokens
        chance_batch = (x[:keep], y[:keep])
        n_tiny = opts.overfit_examples if y.ndim == 1 else opts.overfit_sequences
        tiny = examples(train, n_tiny, seed=seed, device=device)
        check_labels(*tiny.read(), num_classes, "train (overfit subset)", ignore_index)
        probe(model, loss_fn, chance_batch, num_classes)
    ctx = SanityContext(
        model=model,
        loss_fn=loss_fn,
        num_classes=num_classes,
        chance_batch=chance_batch,
        tiny=tiny,
        reg=reg,
        reg_fn=reg_fn,
        chance_loss=chance_loss,
        seed=seed,
        options=opts,
        ignore_index=ignore_index,
    )
    checks: list[Check] = []
    for check in CHECKS.values():
        with seeded(seed, device):
            checks.append(check(ctx))
    info = {
        "num_classes": num_classes,
        "examples_chance": len(chance_batch[1]),
        "examples_overfit": tiny.size,
        "reg": reg,
        "seed": seed,
        "device": str(device),
        "options": asdict(opts),
    }
    return SanityReport(checks, info)


def _output_width(model: nn.Module, train: Split, seed: int) -> int:
    """The number of classes as the width of the model's output on two training examples
    (its class dimension: (N, C), or (N, T, C) / (N, C, T) for (N, T) targets)."""
    device = _device(model)
    with seeded(seed, device):
        x, y = examples(train, 2, seed=seed, device=device).read()
        with torch.no_grad():
            out = copy.deepcopy(model).eval()(x)
    dim = class_dim(out, y) if isinstance(out, torch.Tensor) else None
    if dim is None:
        raise SanityInputError(
            "sanity: the task has no num_classes and the model output is not class scores "
            "(N, C) or (N, T, C) for the targets; fix: set Task.num_classes"
        )
    return int(out.shape[dim])


def sanity_task(
    task: Task,
    model_cfg: Mapping[str, Any],
    *,
    reg: float = 1e-3,
    seed: int = 0,
    options: SanityOptions | None = None,
) -> SanityReport:
    """Sanity-check a task: its model (built under ``torch.manual_seed(seed)``), on train_eval.

    Uses the task's loss_fn, reg_fn, chance_loss, ignore_index and num_classes (the output
    width when the task gives none); ``train_eval`` is the un-augmented training view.
    """
    with seeded(seed):
        model = task.model_factory(dict(model_cfg))
    train, _ = train_view(task)
    num_classes = task.num_classes
    if num_classes is None:
        num_classes = _output_width(model, train, seed)
    return sanity_check(
        model,
        task.loss_fn,
        train,
        num_classes=num_classes,
        reg=reg,
        reg_fn=task.reg_fn,
        chance_loss=task.chance_loss,
        seed=seed,
        options=options,
        ignore_index=task.ignore_index,
    )
