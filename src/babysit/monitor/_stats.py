"""The statistics behind the probes: device-side accumulators and helpers with few host syncs.

Pure functions of tensors and small running-sum classes; nothing here knows about hooks,
windows or records (:mod:`~babysit.monitor._capture` feeds the accumulators,
:mod:`~babysit.monitor.probes` turns them into probe values).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "ACTIVATION_KINDS",
    "SATURATION",
    "ActivationStats",
    "GradStats",
    "histogram",
    "histogram_range",
    "histograms",
    "to_python",
    "update_ratios",
]

SATURATION = 0.95  # |y| > 0.95 of the range: tanh |y| > 0.95, sigmoid |2y - 1| > 0.95

# Activation modules by kind. "relu": dead units are counted; "tanh" / "sigmoid": saturation;
# "other": mean and std only (leaky units never stop passing gradient, so none are dead).
ACTIVATION_KINDS: dict[type[nn.Module], str] = {
    nn.ReLU: "relu",
    nn.ReLU6: "relu",
    nn.Tanh: "tanh",
    nn.Hardtanh: "tanh",
    nn.Sigmoid: "sigmoid",
    nn.Hardsigmoid: "sigmoid",
    nn.LeakyReLU: "other",
    nn.PReLU: "other",
    nn.ELU: "other",
    nn.GELU: "other",
    nn.SiLU: "other",
    nn.Softplus: "other",
}


def to_python(tensors: Sequence[Tensor]) -> list[Any]:
    """Copy many small device tensors to Python with one host sync per device.

    0-d / one-element tensors become floats, others flat lists of floats.
    """
    first = tensors[0] if tensors else None
    if first is not None and all(
        t.ndim == 0 and t.dtype == first.dtype and t.device == first.device for t in tensors
    ):  # the common case (buffered losses): one stack, one copy
        return torch.stack([t.detach() for t in tensors]).tolist()
    out: list[Any] = [0.0] * len(tensors)
    by_device: dict[torch.device, list[int]] = {}
    for i, t in enumerate(tensors):
        by_device.setdefault(t.device, []).append(i)
    for device, idx in by_device.items():
        dtype = torch.float32 if device.type == "mps" else torch.float64  # mps has no float64
        flat = torch.cat([tensors[i].detach().reshape(-1).to(dtype) for i in idx]).tolist()
        pos = 0
        for i in idx:
            n = tensors[i].numel()
            out[i] = flat[pos] if tensors[i].ndim == 0 else flat[pos : pos + n]
            pos += n
    return out


def _wide(x: Tensor) -> Tensor:
    """float16 / bfloat16 widened to float32 (norms and differences lose too much otherwise)."""
    return x.detach().float() if x.dtype in (torch.float16, torch.bfloat16) else x.detach()


def update_ratios(before: Sequence[Tensor], after: Sequence[Tensor]) -> Tensor:
    """``||after - before|| / ||before||`` per tensor pair, as one float32 vector (no sync).

    The notes: "the ratio of the update magnitudes to the value magnitudes ... want ~1e-3".
    Where ``||before|| = 0`` the ratio is inf (or nan when nothing moved either).
    """
    if not before:
        return torch.zeros(0)
    device = before[0].device
    ratios = [
        (torch.linalg.vector_norm(_wide(a) - _wide(b)) / torch.linalg.vector_norm(_wide(b)))
        .float()
        .to(device)
        for b, a in zip(before, after, strict=True)
    ]
    return torch.stack(ratios)  # (P,)


def histogram_range(x: Tensor) -> Tensor:
    """``[min, max]`` of ``x`` as a (2,) float32 tensor on its device (no sync; nan if any nan)."""
    v = x.detach().flatten().float()
    if v.numel() == 0:
        return torch.full((2,), math.nan, device=v.device)
    return torch.stack(torch.aminmax(v))


def histogram(x: Tensor, bins: int, lo: float, hi: float) -> dict[str, Any] | None:
    """Counts of ``x`` in ``bins`` equal bins from ``lo`` to ``hi`` (its range), on the device.

    Bin i holds ``edges[i] <= v < edges[i+1]`` and the last bin also ``hi`` (numpy's rule), with
    ``edges = linspace(lo, hi, bins + 1)``; constant data gets ``lo - 0.5 .. hi + 0.5``.
    Non-finite values are left out. Returns ``{"edges": list (bins+1), "counts": (bins,)}``.
    """
    v = x.detach().flatten().float()
    if not (math.isfinite(lo) and math.isfinite(hi)):  # rare: a diverging run
        v = v[torch.isfinite(v)]
        if v.numel() == 0:
            return None
        lo, hi = torch.stack(torch.aminmax(v)).tolist()
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = torch.linspace(lo, hi, bins + 1, dtype=torch.float64).tolist()
    return {"edges": edges, "counts": torch.histc(v, bins, min=lo, max=hi)}


def histograms(tensors: dict[str, Tensor | None], bins: int) -> dict[str, Any]:
    """:func:`histogram` of many tensors with two host syncs: the ranges, then the counts.

    Returns ``{name: {"edges": [bins + 1 floats], "counts": [bins ints]}}``; None tensors and
    tensors with no finite value are left out.
    """
    kept = {name: t for name, t in tensors.items() if t is not None}
    ranges = to_python([histogram_range(t) for t in kept.values()])
    hists = {n: histogram(t, bins, *r) for (n, t), r in zip(kept.items(), ranges, strict=True)}
    done = {name: h for name, h in hists.items() if h is not None}
    counts = to_python([h["counts"] for h in done.values()])
    return {
        name: {"edges": h["edges"], "counts": [int(c) for c in cs]}
        for (name, h), cs in zip(done.items(), counts, strict=True)
    }


class ActivationStats:
    """Running sums over a capture window for one stream of activations, kept on the device.

    ``kind`` is "relu", "tanh", "sigmoid", "other", or None to infer it from the values seen
    (for activations written as ``F.relu`` inside ``forward``, read at the next layer's input):
    minimum exactly 0 -> relu; within (0, 1] -> sigmoid; within [-1, 1] -> tanh. A unit is the
    channel (dim 1) of each sample; a ReLU unit is dead when it was never > 0 in the window.
    Only the sums the kind needs are taken (one pass each over the activations).
    """

    def __init__(self, kind: str | None) -> None:
        self.kind = kind
        self.count = 0  # elements seen (Python int: known from shapes, no sync)
        self._totals: dict[str, Tensor] = {}  # "sum", "sumsq", "sat_tanh", "sat_sigmoid"
        self._lo: Tensor | None = None  # min and max: to infer the kind
        self._hi: Tensor | None = None
        self._active: Tensor | None = None  # (units,) bool: ever > 0 in the window
        self.first: Tensor | None = None  # the first tensor seen (for histograms)

    def add(self, y: Tensor, *, keep: bool = False) -> None:
        y = y.detach()
        if keep and self.first is None:
            self.first = y
        v = y.float()  # no copy for float32
        n = v.numel()
        flat = v.reshape(-1)  # a view when contiguous
        # sum and dot: one pass each (torch.var_mean is ~8x slower on CPUs)
        totals = {"sum": flat.sum(), "sumsq": torch.dot(flat, flat)}
        if self.kind in (None, "tanh"):
            totals["sat_tanh"] = torch.count_nonzero(v.abs() > SATURATION)
        if self.kind in (None, "sigmoid"):
            totals["sat_sigmoid"] = torch.count_nonzero((v - 0.5).abs() > SATURATION / 2)
        for key, t in totals.items():
            old = self._totals.get(key)
            self._totals[key] = t.double() if old is None else old + t.double()
        if self.kind is None:
            lo, hi = torch.aminmax(v)
            self._lo = lo if self._lo is None else torch.minimum(self._lo, lo)
            self._hi = hi if self._hi is None else torch.maximum(self._hi, hi)
        if self.kind in (None, "relu"):
            dims = [d for d in range(v.ndim) if d != 1] if v.ndim > 1 else [0]
            active = torch.amax(v, dim=dims) > 0  # (units,)
            if self._active is None or self._active.shape != active.shape:
                self._active = active
            else:
                self._active |= active
        self.count += n

    def tensors(self) -> dict[str, Tensor]:
        """What :meth:`summary` needs from the device (0-d tensors)."""
        out = dict(self._totals)
        if self._lo is not None and self._hi is not None:
            out.update(lo=self._lo, hi=self._hi)
        if self._active is not None:
            out["active"] = self._active.double().mean()
        return out

    def summary(self, got: dict[str, float]) -> dict[str, float | None]:
        """``{"mean", "std", "dead", "saturated"}`` from :meth:`tensors` copied to the host."""
        if not got:
            return {"mean": None, "std": None, "dead": None, "saturated": None}
        n = max(self.count, 1)
        mean = got["sum"] / n
        kind = self.kind or _infer_kind(got["lo"], got["hi"])
        saturated = {"tanh": "sat_tanh", "sigmoid": "sat_sigmoid"}.get(kind)
        return {
            "mean": mean,
            "std": math.sqrt(max(got["sumsq"] / n - mean * mean, 0.0)),
            "dead": 1.0 - got["active"] if kind == "relu" else None,
            "saturated": got[saturated] / n if saturated else None,
        }


def _infer_kind(lo: float, hi: float) -> str:
    if lo == 0:  # a ReLU output with any unit off has minimum exactly 0
        return "relu"
    if lo > 0 and hi <= 1:
        return "sigmoid"
    if lo >= -1 and hi <= 1:
        return "tanh"
    return "other"


class GradStats:
    """Sum of ``||dL/dy||^2`` over the backward passes of a window, on the device."""

    def __init__(self) -> None:
        self.sumsq: Tensor | None = None
        self.count = 0
        self.first: Tensor | None = None  # the first gradient seen (for histograms)

    def add(self, grad: Tensor, *, keep: bool) -> None:
        g = grad.detach()
        if keep and self.first is None:
            self.first = g
        flat = g.float().reshape(-1)
        sq = torch.dot(flat, flat)  # ||g||^2 in one pass
        self.sumsq = sq if self.sumsq is None else self.sumsq + sq
        self.count += 1
