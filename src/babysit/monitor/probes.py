"""Probes: the registry of what the monitor records about a training step, and how it is shown.

Each probe writes ``{"kind": "probe", "name", "values"}`` records (see ``log.ProbeRecord``)
and declares, in its :class:`ProbeSpec`, the shape of ``values`` (its ``kind``) and what the
report and the TensorBoard sink need to show it (title, axis, the notes' healthy band). Both
iterate :data:`PROBES`, so a new probe reaches metrics.jsonl, the report and TensorBoard by
one registration here:

- ``update_ratio``: ``||dw|| / ||w||`` per weight tensor for one optimizer step (want ~1e-3);
  1-D tensors (biases, norms) go to ``update_ratio_1d``, with ``None`` where ``||w|| = 0``.
  Tensors that got no gradient (frozen) are left out.
- ``weight_norm``: ``||w||`` per weight tensor at the same steps.
- ``grad_carryover``: per tensor, the share of the last step's gradient that ``.grad`` still
  holds when the next backward pass starts (0: zeroed between steps; 1: never zeroed).
- ``act_stats``: per activation, mean, std, ``dead`` (fraction of ReLU units never active over
  the capture window) and ``saturated`` (fraction of tanh / sigmoid outputs beyond
  ``_stats.SATURATION`` of their range); ``None`` where the kind of activation makes it moot.
- ``grad_norm``: ``||dL/dy||`` of each Linear / Conv layer's output (RMS over the window).
- ``act_hist`` / ``grad_hist``: ``{"edges": n+1 floats, "counts": n ints}`` per layer.
- ``filters``: ``{"path": "filters/step=000050.png"}``, the first layer's filters as an image.

A window probe is a function ``(capture, bins) -> values`` registered with :func:`probe`; the
monitor runs every one whose cadence is due when a capture window closes. Probes the monitor
records by other means (update ratios from the optimizer's step hooks, the filter images) are
registered with :func:`declare`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from babysit._registry import Registry

# Not a cycle (_capture never imports this module): torch stays unloaded until a probe runs,
# so the report, which reads PROBES to draw them, starts (and rejects a bad run dir) fast.
if TYPE_CHECKING:
    from babysit.monitor._capture import Capture

__all__ = [
    "ACT_HIST",
    "ACT_STATS",
    "FILTERS",
    "GRAD_CARRYOVER",
    "GRAD_HIST",
    "GRAD_NORM",
    "PROBES",
    "UPDATE_RATIO",
    "UPDATE_RATIO_1D",
    "UPDATE_RATIO_TARGET",
    "WEIGHT_NORM",
    "Cadence",
    "ProbeFn",
    "ProbeKind",
    "ProbeSpec",
    "Stat",
    "declare",
    "probe",
]

# The shape of a probe's ``values``:
#   per_layer_scalar  {layer or parameter: number | None}
#   per_layer_stats   {layer: {stat: number | None}}          (the stats its spec lists)
#   histogram         {layer: {"edges": [n + 1 floats], "counts": [n ints]}}
#   image             {"path": a PNG path relative to the run dir}
ProbeKind = Literal["per_layer_scalar", "per_layer_stats", "histogram", "image"]
# "every": every capture window; "hist": the windows that take histograms (every 10th)
Cadence = Literal["every", "hist"]
ProbeFn = Callable[["Capture", int], dict[str, Any]]  # (capture, bins) -> values

UPDATE_RATIO_TARGET = 1e-3  # the notes: updates ~1e-3 of the weights


@dataclass(frozen=True)
class Stat:
    """One statistic of a per_layer_stats probe: its key in each layer's values, its panel."""

    key: str
    title: str
    fraction: bool = False  # a fraction of units: drawn on a [0, 1] axis


@dataclass(frozen=True)
class ProbeSpec:
    """A registered probe: its record name, the shape of its values, and how it is shown.

    The report gives each probe a section (probes naming the same ``section`` share one
    figure, the first one's title and axis); TensorBoard logs it by ``kind``.
    """

    name: str
    kind: ProbeKind
    title: str  # the report section's heading
    fn: ProbeFn | None = None  # None: the monitor records it by other means
    cadence: Cadence = "every"
    section: str = ""  # the report section's anchor; "" = the probe's name
    label: str = ""  # per_layer_scalar: the y axis; histogram: what is counted
    log_y: bool = False
    band: tuple[float, float] | None = None  # the notes' healthy range, shaded
    target: float | None = None  # the notes' value to aim at, a dashed line
    stats: tuple[Stat, ...] = ()  # per_layer_stats: the statistics, one panel each
    caption: str = ""
    needs: str = ""  # what else recording it takes (said when a run has none)

    @property
    def anchor(self) -> str:
        return self.section or self.name


PROBES: Registry[ProbeSpec] = Registry("probe")


def declare(name: str, kind: ProbeKind, title: str, **shown: Any) -> str:
    """Register a probe the monitor records by other means; ``shown``: more ProbeSpec fields.

    Returns ``name`` (for the module constant that the recording code emits under).
    """
    PROBES.add(name, ProbeSpec(name, kind, title, **shown))
    return name


def probe(name: str, kind: ProbeKind, title: str, **shown: Any) -> Callable[[ProbeFn], ProbeFn]:
    """Register ``fn(capture, bins) -> values`` as the window probe ``name`` (empty: no record).

    ``shown``: the other :class:`ProbeSpec` fields (cadence, label, band, ...).
    """
    return PROBES.register(name, lambda fn: ProbeSpec(name, kind, title, fn=fn, **shown))


# --- the probes, in the order the report shows them ---------------------------------------

UPDATE_RATIO = declare(
    "update_ratio",
    "per_layer_scalar",
    "Update : weight ratio",
    label="update : weight ratio",
    log_y=True,
    band=(UPDATE_RATIO_TARGET / 10, UPDATE_RATIO_TARGET * 10),
    target=UPDATE_RATIO_TARGET,
    caption="||update|| / ||w|| per parameter; the notes: want ~1e-3 (band: one decade around).",
)
UPDATE_RATIO_1D = declare(
    "update_ratio_1d", "per_layer_scalar", "Update : weight ratio", section=UPDATE_RATIO
)
WEIGHT_NORM = declare(
    "weight_norm",
    "per_layer_scalar",
    "Weight norms",
    label="||w||",
    log_y=True,
    caption="||w|| per weight tensor at each measured step; a steady fall to a fraction of the"
    " initial norm means the regularisation outweighs the data.",
)
GRAD_CARRYOVER = declare(
    "grad_carryover",
    "per_layer_scalar",
    "Gradient left over from the previous step",
    label="share of the last step's gradient",
    caption="What .grad still holds when the next backward pass starts, as a share of the"
    " gradient the last step used: 0 when zero_grad() runs between steps, 1 when it never does"
    " (gradients then add up across steps).",
)

ACT_STATS, GRAD_NORM, ACT_HIST, GRAD_HIST = "act_stats", "grad_norm", "act_hist", "grad_hist"


@probe(
    ACT_STATS,
    "per_layer_stats",
    "Activations: dead and saturated units",
    section="activations",
    stats=(
        Stat("mean", "activation mean"),
        Stat("std", "activation std"),
        Stat("dead", "dead fraction (ReLU: never active)", fraction=True),
        Stat("saturated", "saturated fraction (tanh / sigmoid)", fraction=True),
    ),
)
def act_stats(capture: Capture, bins: int) -> dict[str, Any]:
    """Per activation (forward order): mean, std, dead fraction, saturated fraction."""
    from babysit.monitor._stats import to_python  # torch (see the imports above)

    parts = {name: acc.tensors() for name, acc in capture.acts.items()}
    flat = [(name, key, t) for name, part in parts.items() for key, t in part.items()]
    got: dict[str, dict[str, float]] = {name: {} for name in parts}
    for (name, key, _), value in zip(flat, to_python([t for *_, t in flat]), strict=True):
        got[name][key] = value  # one host sync for every layer
    return {name: acc.summary(got[name]) for name, acc in capture.acts.items()}


@probe(GRAD_NORM, "per_layer_scalar", "Gradient norms", label="gradient norm", log_y=True)
def grad_norm(capture: Capture, bins: int) -> dict[str, Any]:
    """Per Linear / Conv layer (forward order): RMS over the window of ``||dL/d output||``."""
    from babysit.monitor._stats import to_python

    seen = [(name, g.sumsq / g.count) for name, g in capture.grads.items() if g.sumsq is not None]
    if not seen:
        return {}
    means = to_python([mean for _, mean in seen])  # one sync for every layer
    return {name: math.sqrt(v) for (name, _), v in zip(seen, means, strict=True)}


@probe(ACT_HIST, "histogram", "Activation histograms", cadence="hist", label="activation")
def act_hist(capture: Capture, bins: int) -> dict[str, Any]:
    """Histogram of each activation in the window's first captured forward pass."""
    from babysit.monitor._stats import histograms

    return histograms({name: acc.first for name, acc in capture.acts.items()}, bins)


@probe(GRAD_HIST, "histogram", "Gradient histograms", cadence="hist", label="gradient")
def grad_hist(capture: Capture, bins: int) -> dict[str, Any]:
    """Histogram of each layer's output gradient in the window's first backward pass."""
    from babysit.monitor._stats import histograms

    return histograms({name: g.first for name, g in capture.grads.items()}, bins)


FILTERS = declare(
    "filters",
    "image",
    "First-layer filters",
    cadence="hist",
    caption="Smooth, clean, diverse filters are a good sign; noisy ones suggest trouble.",
    needs="and a first layer with image-shaped weights",
)
