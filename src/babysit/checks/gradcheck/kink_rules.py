"""The kink ops the recorder knows: for each, the branch it took and the entries tied at a kink.

A rule receives the op's arguments by schema name, its output and whether tie masks are
wanted; it returns ``(decision, tie)`` (tie of the decision's shape, or None when the rule
cannot tell), or None when the call has no kink (an integer comparison).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from babysit.checks.gradcheck.kinks import kink_op

__all__: list[str] = []

aten = torch.ops.aten
Out = tuple[Tensor, Tensor | None]


def _region(x: Tensor, low: Any, high: Any) -> Tensor:
    """-1 below ``low``, +1 above ``high``, 0 between: the branch of clamp-like ops."""
    below = x < low if low is not None else torch.zeros_like(x, dtype=torch.bool)
    above = x > high if high is not None else torch.zeros_like(x, dtype=torch.bool)
    return above.to(torch.int8) - below.to(torch.int8)


def _at(x: Tensor, *bounds: Any) -> Tensor:
    """Entries of x equal to one of ``bounds`` (None bounds skipped)."""
    tie = torch.zeros_like(x, dtype=torch.bool)
    for b in bounds:
        if b is not None:
            tie |= x == b
    return tie


def _clamp_like(x: Tensor, low: Any, high: Any, ties: bool) -> Out:
    return _region(x, low, high), _at(x, low, high) if ties else None


@kink_op(aten.relu, aten.relu_, aten.leaky_relu, aten.leaky_relu_, aten.elu, aten.elu_)
@kink_op(aten.celu, aten.celu_, aten.selu, aten.selu_, aten._prelu_kernel, aten.prelu)
def _positive(a: dict[str, Any], out: Any, ties: bool) -> Out:
    """Rectifiers: the kink is at 0 (ELU/CELU/SELU change slope there unless alpha = 1)."""
    return a["self"] > 0, (a["self"] == 0) if ties else None


@kink_op(aten.threshold, aten.threshold_)
def _threshold(a: dict[str, Any], out: Any, ties: bool) -> Out:
    return a["self"] > a["threshold"], (a["self"] == a["threshold"]) if ties else None


@kink_op(aten.clamp, aten.clamp_, aten.clip, aten.clip_)
def _clamp(a: dict[str, Any], out: Any, ties: bool) -> Out:
    """clamp(x, min, max): a hinge ``clamp(margin - s, min=0)`` lands here."""
    return _clamp_like(a["self"], a.get("min"), a.get("max"), ties)


@kink_op(aten.clamp_min, aten.clamp_min_)
def _clamp_min(a: dict[str, Any], out: Any, ties: bool) -> Out:
    return a["self"] < a["min"], (a["self"] == a["min"]) if ties else None


@kink_op(aten.clamp_max, aten.clamp_max_)
def _clamp_max(a: dict[str, Any], out: Any, ties: bool) -> Out:
    return a["self"] > a["max"], (a["self"] == a["max"]) if ties else None


@kink_op(aten.hardtanh, aten.hardtanh_)
def _hardtanh(a: dict[str, Any], out: Any, ties: bool) -> Out:
    """hardtanh and relu6 (which dispatches to hardtanh(x, 0, 6))."""
    return _clamp_like(a["self"], a["min_val"], a["max_val"], ties)


@kink_op(aten.hardsigmoid, aten.hardsigmoid_, aten.hardswish, aten.hardswish_)
def _hard_gates(a: dict[str, Any], out: Any, ties: bool) -> Out:
    return _clamp_like(a["self"], -3.0, 3.0, ties)


@kink_op(aten.hardshrink, aten.softshrink)
def _shrink(a: dict[str, Any], out: Any, ties: bool) -> Out:
    lambd = a["lambd"]
    return _clamp_like(a["self"], -lambd, lambd, ties)


@kink_op(aten.abs, aten.abs_, aten.sign, aten.sign_, aten.sgn, aten.sgn_)
def _sign(a: dict[str, Any], out: Any, ties: bool) -> Out:
    return _clamp_like(a["self"], 0.0, 0.0, ties)


@kink_op(aten.floor, aten.ceil, aten.round, aten.trunc, aten.heaviside)
def _steps(a: dict[str, Any], out: Any, ties: bool) -> Out:
    """Piecewise-constant ops: the output itself is the branch."""
    return out, None


@kink_op(aten.gt, aten.lt, aten.ge, aten.le, aten.eq, aten.ne)
def _compare(a: dict[str, Any], out: Any, ties: bool) -> Out | None:
    """Comparisons of floating tensors feed ``where`` and masks; integer ones never move."""
    if not a["self"].is_floating_point():
        return None
    return out, torch.eq(a["self"], a["other"]).expand(out.shape) if ties else None


@kink_op(aten.where)
def _where(a: dict[str, Any], out: Any, ties: bool) -> Out | None:
    cond = a.get("condition")
    return None if cond is None else (cond, None)


@kink_op(aten.maximum, aten.minimum, aten.fmax, aten.fmin)
def _winner(a: dict[str, Any], out: Any, ties: bool) -> Out:
    """Elementwise max(x, y): which argument won (the notes' "identity of the winner")."""
    return _elementwise(a["self"], a["other"], out, ties)


def _elementwise(x: Tensor, y: Tensor, out: Tensor, ties: bool) -> Out:
    return x > y, torch.eq(x, y).expand(out.shape) if ties else None


def _winners(x: Tensor, best: Tensor, dims: list[int] | None) -> Out:
    """(x.shape) mask of the entries equal to the reduction's ``best``, and the tie mask: the
    winners of reductions won more than once."""
    mask = x == best
    count = mask.sum(dims, keepdim=True) if dims is not None else mask.sum()
    return mask, mask & (count > 1)


@kink_op(aten.max, aten.min)
def _max(a: dict[str, Any], out: Any, ties: bool) -> Out:
    """max(x, dim) returns the winners' indices; max(x) wins at one flat index; max(x, y) is
    elementwise."""
    x = a["self"]
    if isinstance(out, tuple):
        tie = None
        if ties:
            dim = a["dim"] % max(1, x.ndim)
            values = out[0] if a.get("keepdim") or x.ndim == 0 else out[0].unsqueeze(dim)
            count = (x == values).sum(dim, keepdim=True)
            tie = (count > 1).reshape(out[1].shape)
        return out[1], tie
    if isinstance(a.get("other"), Tensor):
        return _elementwise(x, a["other"], out, ties)
    mask, tie = _winners(x, out, None)
    return mask, tie if ties else None


@kink_op(aten.amax, aten.amin)
def _amax(a: dict[str, Any], out: Any, ties: bool) -> Out:
    x = a["self"]
    dims = [d % x.ndim for d in a.get("dim") or range(x.ndim)] if x.ndim else []
    keep = [1 if i in dims else size for i, size in enumerate(x.shape)]
    mask, tie = _winners(x, out.reshape(keep), dims or None)
    return mask, tie if ties else None


def _pool_ties(a: dict[str, Any], values: Tensor) -> Tensor | None:
    """Max-pool windows (1-d or 2-d) whose maximum is attained more than once: unfold the
    input padded with -inf into its windows and count the entries equal to the output."""
    x, k = a["self"], list(a["kernel_size"])
    if len(k) not in (1, 2) or not x.is_floating_point():
        return None
    d = len(k)
    stride = list(a.get("stride") or k)
    pad, dil = list(a.get("padding") or [0] * d), list(a.get("dilation") or [1] * d)
    stride, pad, dil = ([v[0]] * d if len(v) == 1 else v for v in (stride, pad, dil))
    batch = x.shape[: x.ndim - d]  # (N, C) or (C,)
    img, out = x.reshape(-1, 1, *x.shape[x.ndim - d :]), values.reshape(-1, *values.shape[-d:])
    if d == 1:  # as 2-d with a height of 1
        img, out = img.unsqueeze(2), out.unsqueeze(1)
        k, stride, pad, dil = [1, *k], [1, *stride], [0, *pad], [1, *dil]
    oh, ow = out.shape[-2:]
    need = [
        (o - 1) * s + q * (kk - 1) + 1 for o, s, q, kk in zip((oh, ow), stride, dil, k, strict=True)
    ]
    extra = [
        max(0, n - (size + 2 * p)) for n, size, p in zip(need, img.shape[-2:], pad, strict=True)
    ]
    img = F.pad(img, (pad[1], pad[1] + extra[1], pad[0], pad[0] + extra[0]), value=-torch.inf)
    cols = F.unfold(img, tuple(k), dilation=tuple(dil), stride=tuple(stride))  # (B, kh*kw, L)
    cols = cols[..., : oh * ow].reshape(-1, k[0] * k[1], oh, ow)
    tie = (cols == out.unsqueeze(1)).sum(1) > 1  # (B, oh, ow)
    return tie.reshape(*batch, *values.shape[x.ndim - d :])


@kink_op(aten.max_pool1d_with_indices, aten.max_pool2d_with_indices)
def _pool(a: dict[str, Any], out: Any, ties: bool) -> Out:
    """Max-pooling: the indices are the winners; ties are windows won more than once."""
    return out[1], _pool_ties(a, out[0]) if ties else None


@kink_op(aten.max_pool3d_with_indices, aten.adaptive_max_pool2d, aten.adaptive_max_pool3d)
@kink_op(aten.fractional_max_pool2d, aten.fractional_max_pool3d)
@kink_op(aten.topk, aten.kthvalue, aten.mode, aten.cummax, aten.cummin)
def _indices(a: dict[str, Any], out: Any, ties: bool) -> Out:
    """Ops that return (values, indices): the indices are the winners (ties not computed)."""
    return out[1], None


def _sorted_ties(values: Tensor, dim: int) -> Tensor:
    """Positions of a sorted tensor equal to a neighbour along ``dim``."""
    v = values.movedim(dim, -1)
    eq = v[..., 1:] == v[..., :-1]
    tie = torch.zeros_like(v, dtype=torch.bool)
    tie[..., 1:] |= eq
    tie[..., :-1] |= eq
    return tie.movedim(-1, dim)


@kink_op(aten.sort)
def _sort(a: dict[str, Any], out: Any, ties: bool) -> Out:
    x = a["self"]
    dim = a.get("dim", -1) % max(1, x.ndim)
    return out[1], _sorted_ties(out[0], dim) if ties and x.ndim else None


@kink_op(aten.median, aten.nanmedian)
def _median(a: dict[str, Any], out: Any, ties: bool) -> Out:
    return (out[1] if isinstance(out, tuple) else a["self"].flatten().argsort(stable=True)), None


@kink_op(aten.max_pool2d, aten.max_pool1d, aten.max_pool3d)
def _pool_without_indices(a: dict[str, Any], out: Any, ties: bool) -> Out:
    """Some backends pool without indices: ask the indexed kernel for the winners."""
    x, k = a["self"], a["kernel_size"]
    args = (a.get("stride") or k, a.get("padding", 0), a.get("dilation", 1), a.get("ceil_mode"))
    pool = {1: aten.max_pool1d_with_indices, 2: aten.max_pool2d_with_indices}.get(len(k))
    pool = pool or aten.max_pool3d_with_indices
    values, indices = pool(x, k, *args)
    return indices, _pool_ties(a, values) if ties and len(k) < 3 else None


def _arg_best(a: dict[str, Any], out: Any, ties: bool, largest: bool) -> Out:
    """argmax / argmin: the index is the branch; a tie is a best value attained twice."""
    if not ties:
        return out, None
    x, dim = a["self"], a.get("dim")
    if dim is None:
        best = x.max() if largest else x.min()
        return out, ((x == best).sum() > 1).reshape(out.shape)
    best = x.amax(dim, keepdim=True) if largest else x.amin(dim, keepdim=True)
    return out, ((x == best).sum(dim, keepdim=bool(a.get("keepdim"))) > 1).reshape(out.shape)


@kink_op(aten.argmax)
def _argmax(a: dict[str, Any], out: Any, ties: bool) -> Out:
    return _arg_best(a, out, ties, largest=True)


@kink_op(aten.argmin)
def _argmin(a: dict[str, Any], out: Any, ties: bool) -> Out:
    return _arg_best(a, out, ties, largest=False)


@kink_op(aten.argsort)
def _argsort(a: dict[str, Any], out: Any, ties: bool) -> Out:
    x = a["self"]
    if not ties or not x.ndim:
        return out, None
    dim = a.get("dim", -1) % x.ndim
    return out, _sorted_ties(x.gather(dim, out), dim)


@kink_op(aten.bucketize, aten.searchsorted)
def _output_indices(a: dict[str, Any], out: Any, ties: bool) -> Out:
    return out, None


@kink_op(aten.multi_margin_loss)
def _multi_margin(a: dict[str, Any], out: Any, ties: bool) -> Out:
    """nn.MultiMarginLoss: which margins ``margin - x[y] + x[j]`` are active (> 0)."""
    x, y = a["self"], a["target"]
    x2 = x.reshape(-1, x.shape[-1])  # (N, C)
    correct = x2.gather(1, y.reshape(-1, 1))  # (N, 1)
    margins = a["margin"] - correct + x2
    return margins > 0, (margins == 0) if ties else None


@kink_op(aten.multilabel_margin_loss_forward)
def _multilabel_margin(a: dict[str, Any], out: Any, ties: bool) -> Out:
    """nn.MultiLabelMarginLoss: the active hinges ``1 - (x[y_j] - x[i])`` over the label set
    (targets listed first, ended by -1) and the classes outside it."""
    x, y = a["self"], a["target"]
    x2, y2 = x.reshape(-1, x.shape[-1]), y.reshape(-1, x.shape[-1])  # (N, C)
    listed = torch.cumprod((y2 >= 0).to(torch.int8), 1).bool()  # before the first -1
    labels = torch.zeros_like(listed).scatter_(1, y2.clamp(min=0), listed)  # (N, C) in the set
    xt = x2.gather(1, y2.clamp(min=0))  # (N, C) x[y_j]
    margins = 1 - xt.unsqueeze(2) + x2.unsqueeze(1)  # (N, j, i)
    valid = (listed.unsqueeze(2) & ~labels.unsqueeze(1)).expand_as(margins)
    return (margins > 0) & valid, ((margins == 0) & valid) if ties else None


@kink_op(aten._cdist_forward)
def _cdist(a: dict[str, Any], out: Any, ties: bool) -> Out | None:
    """cdist with p = 1 sums |x_i - y_j| (kinks where coordinates coincide); p = inf takes
    the largest; other p are smooth away from coinciding points."""
    p = float(a["p"])
    if p not in (1.0, float("inf")):
        return None
    diff = a["x1"].unsqueeze(-2) - a["x2"].unsqueeze(-3)  # (..., P, R, M)
    if p == 1.0:
        return _clamp_like(diff, 0.0, 0.0, ties)
    return diff.abs().argmax(-1), None


@kink_op(aten.linalg_vector_norm)
def _vector_norm(a: dict[str, Any], out: Any, ties: bool) -> Out | None:
    """L1 norms kink at zeros; max norms at a change of winner. L2 is smooth away from 0."""
    x, order = a["self"], float(a.get("ord", 2))
    if order == 1:
        return _clamp_like(x, 0.0, 0.0, ties)
    if order in (float("inf"), float("-inf")):
        return x.abs().flatten().argmax().reshape(1), None
    return None
