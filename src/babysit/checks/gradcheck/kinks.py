"""Kink recorder: write down the branch every non-differentiable op took during one evaluation.

The notes: "it is possible to know if a kink was crossed ... by keeping track of the
identities of all winners in a function of form max(x, y)". :class:`KinkRecorder` is a
``TorchDispatchMode``, so it sees the aten ops under plain user code (``F.relu``,
``torch.max``, ``nn.MaxPool2d``, ``nn.MultiMarginLoss``, a hinge written with ``clamp``)
without changing it. Each registered op contributes one *decision* tensor: the predicate on
its inputs that picked the branch (``x > 0`` for relu, the argmax for max-pooling, the active
margins of a hinge). Two evaluations crossed a kink iff their decision lists differ.

With ``ties=True`` each decision also gets a *tie* mask of the same shape: the entries that
sit exactly at their kink (a relu input of exactly 0, a max-pool window whose maximum is
attained twice: a flat image background, zero biases, padding). A perturbation that changes
only tied entries crossed a kink *at* the checked point, which no smaller step can avoid
(:func:`compare` says "ties"). The rules live in ``kink_rules.py``; adding an op is adding one
decorated function there.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = [
    "KINK_OPS",
    "Decisions",
    "KinkRecorder",
    "Rule",
    "compare",
    "count_ties",
    "crossed",
    "kink_op",
]

# (op name, decision tensor, tie mask or None when the rule cannot tell) in call order.
Decisions = list[tuple[str, Tensor, Tensor | None]]
# (bound arguments by schema name, output, ties wanted) -> (decision, tie mask), or None when
# the call has no kink.
Rule = Callable[[dict[str, Any], Any, bool], tuple[Tensor, Tensor | None] | None]

KINK_OPS: dict[Any, Rule] = {}


def kink_op(*ops: Any) -> Callable[[Rule], Rule]:
    """Register a decision rule for aten op packets (every overload of each)."""

    def register(rule: Rule) -> Rule:
        for op in ops:
            KINK_OPS[op] = rule
        return rule

    return register


def _bind(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """Arguments by schema name, defaults filled in."""
    bound: dict[str, Any] = {}
    for i, arg in enumerate(func._schema.arguments):
        if i < len(args):
            bound[arg.name] = args[i]
        elif arg.name in kwargs:
            bound[arg.name] = kwargs[arg.name]
        elif arg.has_default_value():
            bound[arg.name] = arg.default_value
    return bound


class KinkRecorder(TorchDispatchMode):
    """Dispatch mode that appends one decision per kink op to :attr:`decisions`.

    Usage: ``with KinkRecorder() as rec: loss = f()`` then compare ``rec.decisions`` across
    evaluations with :func:`compare`. Ops run unchanged; decisions are detached copies.
    ``ties``: also compute each decision's tie mask (only the base point needs them).
    A ``where`` whose condition came from a recorded comparison adds nothing: the comparison
    already recorded that branch, with its ties.
    """

    def __init__(self, *, ties: bool = False) -> None:
        super().__init__()
        self.decisions: Decisions = []
        self.ties = ties
        self._masks: dict[int, weakref.ref[Tensor]] = {}  # recorded comparisons' outputs

    def __torch_dispatch__(
        self,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        rule = KINK_OPS.get(func.overloadpacket)
        if rule is None:
            return func(*args, **kwargs)
        bound = _bind(func, args, kwargs)
        name = func.overloadpacket.__name__
        if name == "where" and self._recorded_mask(bound.get("condition")):
            return func(*args, **kwargs)
        if func._schema.is_mutable:
            # In-place ops overwrite their input: decide on a copy taken before the op.
            bound = {k: v.clone() if isinstance(v, Tensor) else v for k, v in bound.items()}
        out = func(*args, **kwargs)
        got = rule(bound, out, self.ties)
        if got is not None:
            decision, tie = got
            self.decisions.append((name, decision.detach().clone(), tie))
            if isinstance(out, Tensor) and out.dtype == torch.bool:
                self._masks[id(out)] = weakref.ref(out)
        return out

    def _recorded_mask(self, t: Any) -> bool:
        ref = self._masks.get(id(t))
        return ref is not None and ref() is t


def compare(a: Decisions, base: Decisions) -> str:
    """How evaluation ``a`` differs from ``base`` (recorded with ties): "same" (no branch
    changed), "ties" (only entries tied at the base point changed: a kink *at* the point) or
    "other" (a kink crossed at some distance, or another op path)."""
    if len(a) != len(base):
        return "other"
    out = "same"
    for (name_a, da, _), (name_b, db, tie) in zip(a, base, strict=True):
        if name_a != name_b or da.shape != db.shape:
            return "other"
        diff = da != db
        if bool(diff.any()):
            if tie is None or tie.shape != diff.shape or bool((diff & ~tie).any()):
                return "other"
            out = "ties"
    return out


def crossed(a: Decisions, b: Decisions) -> bool:
    """True iff two evaluations took a different branch anywhere (or a different op path)."""
    if len(a) != len(b):
        return True
    for (name_a, da, _), (name_b, db, _) in zip(a, b, strict=True):
        if name_a != name_b or da.shape != db.shape or not torch.equal(da, db):
            return True
    return False


def count_ties(decisions: Decisions) -> dict[str, int]:
    """Entries sitting exactly at a kink, by op name (for the report)."""
    out: dict[str, int] = {}
    for name, _, tie in decisions:
        if tie is not None and (n := int(tie.sum())):
            out[name] = out.get(name, 0) + n
    return out


from babysit.checks.gradcheck import kink_rules  # noqa: E402,F401  (registers the rules)
