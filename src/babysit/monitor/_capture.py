"""One capture window: forward / backward hooks that feed the window probes; close() removes them.

Hooks exist only while a window is open (a few steps every ``every``), so the steps in
between run with no hook at all. Only forward passes with grad enabled are seen (validation
under ``torch.no_grad()`` is not training). Activations are read from

- the outputs of activation modules (nn.ReLU, nn.Tanh, ...; their kind is known), and
- the inputs of Linear / Conv layers that are not such an output (passed through dropout,
  pooling or flatten): activations written as ``F.relu(...)`` inside ``forward`` are seen
  there, named ``"<layer>.input"``, with their kind inferred from the values.

A layer input that does not require grad is data, not an activation: the first layer fed with
data is remembered for the first-layer filters. Output gradients ``dL/dy`` of every Linear /
Conv layer are read by tensor hooks registered in the forward pass.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from babysit.monitor._stats import ACTIVATION_KINDS, ActivationStats, GradStats

__all__ = ["PASS_THROUGH", "WEIGHT_LAYERS", "Capture", "activation_kind"]

WEIGHT_LAYERS: tuple[type[nn.Module], ...] = (nn.Linear, nn.modules.conv._ConvNd)
# Modules whose output is still "the activation" of their input (no new statistics).
PASS_THROUGH: tuple[type[nn.Module], ...] = (
    nn.modules.dropout._DropoutNd,
    nn.Flatten,
    nn.Unflatten,
    nn.Identity,
    nn.modules.pooling._MaxPoolNd,
    nn.modules.pooling._AvgPoolNd,
    nn.modules.pooling._AdaptiveAvgPoolNd,
    nn.modules.pooling._AdaptiveMaxPoolNd,
)


def activation_kind(module: nn.Module) -> str | None:
    """The kind of an activation module ("relu", "tanh", ...), or None for other modules."""
    kind = ACTIVATION_KINDS.get(type(module))
    if kind is None:
        kind = next((k for t, k in ACTIVATION_KINDS.items() if isinstance(module, t)), None)
    return kind


class Capture:
    """Hooks on ``model`` for one probe window; ``keep`` also keeps tensors for histograms."""

    def __init__(self, model: nn.Module, *, keep: bool) -> None:
        self.keep = keep
        self.acts: dict[str, ActivationStats] = {}  # insertion order = forward order
        self.grads: dict[str, GradStats] = {}
        self.rows = 0  # samples seen by the model in this window
        self.batch = 0  # the most samples one forward pass saw (the batch size)
        self.steps = 0  # monitor steps since the window opened
        self.input_shape: tuple[int, ...] | None = None  # per sample, e.g. (1, 8, 8)
        self.data_layer: nn.Module | None = None
        self._seen: set[int] = set()  # data_ptr of activation outputs in this forward pass
        self._closed = False
        self._handles: list[RemovableHandle] = [model.register_forward_pre_hook(self._on_input)]
        for name, module in model.named_modules():
            label = name or type(module).__name__.lower()
            kind = activation_kind(module)
            if kind is not None:
                hook: Any = partial(self._on_activation, label, kind)
                self._handles.append(module.register_forward_hook(hook))
            elif isinstance(module, PASS_THROUGH):
                self._handles.append(module.register_forward_hook(self._on_pass))
            elif isinstance(module, WEIGHT_LAYERS):
                pre: Any = partial(self._on_layer_input, label)
                post: Any = partial(self._on_layer_output, label)
                self._handles.append(module.register_forward_pre_hook(pre))
                self._handles.append(module.register_forward_hook(post))

    def close(self) -> None:
        """Remove every hook of this window (tensor hooks still pending become no-ops)."""
        self._closed = True
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _stats(self, name: str, kind: str | None) -> ActivationStats:
        stats = self.acts.get(name)
        if stats is None:
            stats = self.acts[name] = ActivationStats(kind)
        return stats

    def _on_input(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        if not torch.is_grad_enabled():
            return
        self._seen.clear()  # a new forward pass
        x = next((a for a in args if isinstance(a, Tensor)), None)
        if x is not None and x.ndim > 0:
            self.rows += x.shape[0]
            self.batch = max(self.batch, x.shape[0])
            self.input_shape = tuple(x.shape[1:])

    def _on_activation(
        self, name: str, kind: str, module: nn.Module, args: tuple[Any, ...], out: Any
    ) -> None:
        if torch.is_grad_enabled() and isinstance(out, Tensor):
            self._stats(name, kind).add(out, keep=self.keep)
            self._seen.add(out.data_ptr())

    def _on_pass(self, module: nn.Module, args: tuple[Any, ...], out: Any) -> None:
        if (
            args
            and isinstance(args[0], Tensor)
            and isinstance(out, Tensor)
            and args[0].data_ptr() in self._seen
        ):
            self._seen.add(out.data_ptr())

    def _on_layer_input(self, name: str, module: nn.Module, args: tuple[Any, ...]) -> None:
        if not torch.is_grad_enabled() or not args or not isinstance(args[0], Tensor):
            return
        x = args[0]
        if not x.is_floating_point():
            return
        if not x.requires_grad:  # data, not an activation
            if self.data_layer is None:
                self.data_layer = module
            return
        if x.data_ptr() not in self._seen:
            self._stats(f"{name}.input", None).add(x, keep=self.keep)

    def _on_layer_output(
        self, name: str, module: nn.Module, args: tuple[Any, ...], out: Any
    ) -> None:
        if torch.is_grad_enabled() and isinstance(out, Tensor) and out.requires_grad:
            stats = self.grads.setdefault(name, GradStats())
            out.register_hook(partial(self._on_grad, stats))

    def _on_grad(self, stats: GradStats, grad: Tensor) -> None:
        if not self._closed:
            stats.add(grad, keep=self.keep)
