"""Kink recorder: write down the branch every non-differentiable op took during one evaluation.

The notes: "it is possible to know if a kink was crossed ... by keeping track of the
identities of all winners in a function of form max(x, y)". :class:`KinkRecorder` is a
``TorchDispatchMode``, so it sees the aten ops under plain user code (``F.relu``,
``torch.max``, ``nn.MaxPool2d``, ``nn.MultiMarginLoss``, a hinge written with ``clamp``)
without changing it. Each registered op contributes one *decision* tensor: the predicate on
its inputs that picked the branch (``x > 0`` for relu, the argmax for max-pooling, the active
margins of a hinge). Two evaluations crossed a kink iff their decision lists differ.

Adding an op is adding one decorated function to :data:`KINK_OPS`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["KINK_OPS", "Decisions", "KinkRecorder", "crossed", "kink_op"]

aten = torch.ops.aten
# (op name, decision tensor) in call order.
Decisions = list[tuple[str, Tensor]]
# (bound arguments by schema name, output) -> decision, or None when the call has no kink.
Rule = Callable[[dict[str, Any], Any], Tensor | None]

KINK_OPS: dict[Any, Rule] = {}


def kink_op(*ops: Any) -> Callable[[Rule], Rule]:
    """Register a decision rule for aten op packets (every overload of each)."""

    def register(rule: Rule) -> Rule:
        for op in ops:
            KINK_OPS[op] = rule
        return rule

    return register


def _region(x: Tensor, low: Any, high: Any) -> Tensor:
    """-1 below ``low``, +1 above ``high``, 0 between: the branch of clamp-like ops."""
    below = x < low if low is not None else torch.zeros_like(x, dtype=torch.bool)
    above = x > high if high is not None else torch.zeros_like(x, dtype=torch.bool)
    return above.to(torch.int8) - below.to(torch.int8)


@kink_op(aten.relu, aten.relu_, aten.leaky_relu, aten.leaky_relu_, aten.elu, aten.elu_)
@kink_op(aten.celu, aten.celu_, aten.selu, aten.selu_, aten._prelu_kernel, aten.prelu)
def _positive(a: dict[str, Any], out: Any) -> Tensor:
    """Rectifiers: the kink is at 0 (ELU/CELU/SELU change slope there unless alpha = 1)."""
    return a["self"] > 0


@kink_op(aten.threshold, aten.threshold_)
def _threshold(a: dict[str, Any], out: Any) -> Tensor:
    return a["self"] > a["threshold"]


@kink_op(aten.clamp, aten.clamp_, aten.clip, aten.clip_)
def _clamp(a: dict[str, Any], out: Any) -> Tensor:
    """clamp(x, min, max): a hinge ``clamp(margin - s, min=0)`` lands here."""
    return _region(a["self"], a.get("min"), a.get("max"))


@kink_op(aten.clamp_min, aten.clamp_min_)
def _clamp_min(a: dict[str, Any], out: Any) -> Tensor:
    return a["self"] < a["min"]


@kink_op(aten.clamp_max, aten.clamp_max_)
def _clamp_max(a: dict[str, Any], out: Any) -> Tensor:
    return a["self"] > a["max"]


@kink_op(aten.hardtanh, aten.hardtanh_)
def _hardtanh(a: dict[str, Any], out: Any) -> Tensor:
    """hardtanh and relu6 (which dispatches to hardtanh(x, 0, 6))."""
    return _region(a["self"], a["min_val"], a["max_val"])


@kink_op(aten.hardsigmoid, aten.hardsigmoid_, aten.hardswish, aten.hardswish_)
def _hard_gates(a: dict[str, Any], out: Any) -> Tensor:
    return _region(a["self"], -3.0, 3.0)


@kink_op(aten.hardshrink, aten.softshrink)
def _shrink(a: dict[str, Any], out: Any) -> Tensor:
    lambd = a["lambd"]
    return _region(a["self"], -lambd, lambd)


@kink_op(aten.abs, aten.abs_, aten.sign, aten.sign_, aten.sgn, aten.sgn_)
def _sign(a: dict[str, Any], out: Any) -> Tensor:
    return _region(a["self"], 0.0, 0.0)


@kink_op(aten.floor, aten.ceil, aten.round, aten.trunc, aten.heaviside)
def _steps(a: dict[str, Any], out: Any) -> Tensor:
    """Piecewise-constant ops: the output itself is the branch."""
    return out


@kink_op(aten.gt, aten.lt, aten.ge, aten.le, aten.eq, aten.ne)
def _compare(a: dict[str, Any], out: Any) -> Tensor | None:
    """Comparisons of floating tensors feed ``where`` and masks; integer ones never move."""
    return out if a["self"].is_floating_point() else None


@kink_op(aten.where)
def _where(a: dict[str, Any], out: Any) -> Tensor | None:
    return a.get("condition")


@kink_op(aten.maximum, aten.minimum, aten.fmax, aten.fmin)
def _winner(a: dict[str, Any], out: Any) -> Tensor:
    """Elementwise max(x, y): which argument won (the notes' "identity of the winner")."""
    return a["self"] > a["other"]


@kink_op(aten.max, aten.min)
def _max(a: dict[str, Any], out: Any) -> Tensor:
    """max(x, dim) returns the winners' indices; max(x) wins at one flat index; max(x, y) is
    elementwise."""
    if isinstance(out, tuple):
        return out[1]
    if isinstance(a.get("other"), Tensor):
        return a["self"] > a["other"]
    return a["self"] == out  # full reduction: (x.shape) mask of the winners


@kink_op(aten.amax, aten.amin)
def _amax(a: dict[str, Any], out: Any) -> Tensor:
    x = a["self"]
    dims = [d % x.ndim for d in a.get("dim") or range(x.ndim)] if x.ndim else []
    keep = [1 if i in dims else size for i, size in enumerate(x.shape)]
    return x == out.reshape(keep)  # (x.shape) mask of the winners


@kink_op(aten.max_pool1d_with_indices, aten.max_pool2d_with_indices)
@kink_op(aten.max_pool3d_with_indices, aten.adaptive_max_pool2d, aten.adaptive_max_pool3d)
@kink_op(aten.fractional_max_pool2d, aten.fractional_max_pool3d)
@kink_op(aten.sort, aten.topk, aten.kthvalue, aten.mode, aten.cummax, aten.cummin)
def _indices(a: dict[str, Any], out: Any) -> Tensor:
    """Ops that return (values, indices): the indices are the winners."""
    return out[1]


@kink_op(aten.median, aten.nanmedian)
def _median(a: dict[str, Any], out: Any) -> Tensor:
    return out[1] if isinstance(out, tuple) else a["self"].flatten().argsort(stable=True)


@kink_op(aten.max_pool2d, aten.max_pool1d, aten.max_pool3d)
def _pool_without_indices(a: dict[str, Any], out: Any) -> Tensor:
    """Some backends pool without indices: ask the indexed kernel for the winners."""
    x, k = a["self"], a["kernel_size"]
    args = (a.get("stride") or k, a.get("padding", 0), a.get("dilation", 1), a.get("ceil_mode"))
    pool = {1: aten.max_pool1d_with_indices, 2: aten.max_pool2d_with_indices}.get(len(k))
    pool = pool or aten.max_pool3d_with_indices
    return pool(x, k, *args)[1]


@kink_op(aten.argmax, aten.argmin, aten.argsort, aten.bucketize, aten.searchsorted)
def _output_indices(a: dict[str, Any], out: Any) -> Tensor:
    return out


@kink_op(aten.multi_margin_loss)
def _multi_margin(a: dict[str, Any], out: Any) -> Tensor:
    """nn.MultiMarginLoss: which margins ``margin - x[y] + x[j]`` are active (> 0)."""
    x, y = a["self"], a["target"]
    x2 = x.reshape(-1, x.shape[-1])  # (N, C)
    correct = x2.gather(1, y.reshape(-1, 1))  # (N, 1)
    return (a["margin"] - correct + x2) > 0


@kink_op(aten.linalg_vector_norm)
def _vector_norm(a: dict[str, Any], out: Any) -> Tensor | None:
    """L1 norms kink at zeros; max norms at a change of winner. L2 is smooth away from 0."""
    x, order = a["self"], float(a.get("ord", 2))
    if order == 1:
        return _region(x, 0.0, 0.0)
    if order in (float("inf"), float("-inf")):
        return x.abs().flatten().argmax().reshape(1)
    return None


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
    evaluations with :func:`crossed`. Ops run unchanged; decisions are detached copies.
    """

    def __init__(self) -> None:
        super().__init__()
        self.decisions: Decisions = []

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
        if func._schema.is_mutable:
            # In-place ops overwrite their input: decide on a copy taken before the op.
            bound = {k: v.clone() if isinstance(v, Tensor) else v for k, v in bound.items()}
        out = func(*args, **kwargs)
        decision = rule(bound, out)
        if decision is not None:
            self.decisions.append((func.overloadpacket.__name__, decision.detach().clone()))
        return out


def crossed(a: Decisions, b: Decisions) -> bool:
    """True iff two evaluations took a different branch anywhere (or a different op path)."""
    if len(a) != len(b):
        return True
    for (name_a, da), (name_b, db) in zip(a, b, strict=True):
        if name_a != name_b or da.shape != db.shape or not torch.equal(da, db):
            return True
    return False
