"""A framework's model and loss as the ``(model, loss_fn, x, y)`` that the checks take.

:func:`babysit.sanity_check` and :func:`babysit.gradcheck` evaluate ``loss_fn(model(x), y)``
on deep copies of ``model`` (float64 for the gradient check), on subsets of the rows, and
``loss_fn(reference, y)`` on synthetic chance-level outputs. A framework computes its loss
elsewhere: Lightning in ``training_step(batch, batch_idx)``, Hugging Face inside ``forward``
from ``labels``. So each view keeps the first batch's inputs as buffers (floating ones are
cast with the copy, token ids are kept) and takes *row indices* as ``x``: ``x = arange(N)``,
and a subset of rows is a subset of indices, whatever the batch holds.

The forward records the copy that ran it and its rows in a slot that deep copies share (a
copy runs ``forward`` then ``loss_fn``, one after the other), so ``loss_fn`` reaches the
right copy:

- Lightning (:class:`StepLossView`): ``loss_fn(out, y)`` is ``training_step((x_rows, y), 0)``
  with the copy's ``forward`` returning ``out``; a function of the outputs, as the checks
  need. ``training_step`` must compute its outputs with ``self(x)`` / ``self.forward(x)``.
- Hugging Face (:class:`ReturnedLossView`): the model's returned ``loss`` for the outputs it
  returned with it; for any other outputs (the chance reference) the cross-entropy that
  Hugging Face's classification and token heads use (``ignore_index=-100``).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Mapping
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from babysit.errors import ConfigError

__all__ = ["ReturnedLossView", "StepLossView", "loss_of", "rows"]


class _Slot:
    """What the last forward ran on; shared by a view and all its deep copies."""

    def __init__(self) -> None:
        self.last: tuple[Any, ...] | None = None

    def __deepcopy__(self, memo: dict[int, Any]) -> _Slot:
        return self


class StepLossView(nn.Module):
    """A LightningModule for the checks: ``forward(rows) = module(inputs[rows])``.

    Holds a deep copy of the module (no trainer attached: its ``self.log`` calls are no-ops)
    and the first batch's inputs ``(N, ...)``.
    """

    def __init__(self, module: nn.Module, inputs: Tensor) -> None:
        super().__init__()
        self.module = copy.deepcopy(module)
        self.register_buffer("inputs", inputs.detach().clone())
        self.slot = _Slot()

    def forward(self, rows: Tensor) -> Any:
        inputs = cast(Tensor, self.inputs)
        x = inputs[rows]
        out = self.module(x)
        self.slot.last = (self.module, x)
        return out

    def loss_fn(self, out: Tensor, y: Tensor) -> Tensor:
        """``training_step((x, y), 0)`` of the copy that made ``out``, forward giving ``out``."""
        if self.slot.last is None:
            raise ConfigError("babysit checks: loss_fn called before the model ran")
        module, x = self.slot.last
        used: list[bool] = []

        def forward(*args: Any, **kwargs: Any) -> Tensor:
            used.append(True)
            return out

        module.forward = forward
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # self.log() without a trainer
                result = module.training_step((x, y), 0)
        finally:
            del module.forward
        loss = loss_of(result)
        if not used or loss is None:
            raise ConfigError(
                "Babysit(sanity/gradcheck): training_step must compute its outputs with "
                "self(x) and return the loss (or {'loss': ...}); the checks read the loss "
                "as a function of those outputs"
            )
        return loss


class ReturnedLossView(nn.Module):
    """A Hugging Face model for the checks: ``forward(rows)`` runs (a deep copy of) the model
    on the first batch's rows with their labels and returns its logits (its loss kept for
    ``loss_fn``)."""

    def __init__(self, model: nn.Module, inputs: Mapping[str, Tensor], labels: Tensor) -> None:
        super().__init__()
        self.model = copy.deepcopy(model)  # the checks' forwards leave the user's model alone
        self.keys = sorted(inputs)
        for key in self.keys:
            self.register_buffer(f"input_{key}", inputs[key].detach().clone())
        self.register_buffer("labels", labels.detach().clone())
        self.slot = _Slot()

    def forward(self, rows: Tensor) -> Tensor:
        kwargs = {key: getattr(self, f"input_{key}")[rows] for key in self.keys}
        labels = self.given_labels()[rows]
        result = self.model(**kwargs, labels=labels)
        logits, loss = _field(result, "logits"), _field(result, "loss")
        if not isinstance(logits, Tensor) or not isinstance(loss, Tensor):
            raise ConfigError(
                "BabysitCallback(sanity/gradcheck): the model must return logits and, given "
                "labels, a loss (a Hugging Face ...For...Classification / ...LM model does)"
            )
        self.slot.last = (logits, loss, labels)
        return logits

    def given_labels(self) -> Tensor:
        """The first batch's labels (N, ...), the checks' targets."""
        return cast(Tensor, self.labels)

    def loss_fn(self, out: Tensor, y: Tensor) -> Tensor:
        """The model's returned loss for its own outputs; cross-entropy for any other."""
        last = self.slot.last
        if (
            last is not None
            and out is last[0]
            and y.shape == last[2].shape  # equal() needs the shapes to match
            and torch.equal(y, last[2])
        ):
            loss: Tensor = last[1]
            return loss
        return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1), ignore_index=-100)


def _field(result: Any, name: str) -> Any:
    if isinstance(result, Mapping):
        return result.get(name)
    return getattr(result, name, None)


def loss_of(output: Any) -> Tensor | None:
    """The loss in a step's output: the tensor itself or its ``"loss"`` entry (None if none)."""
    if isinstance(output, Tensor):
        return output
    loss = _field(output, "loss") if output is not None else None
    return loss if isinstance(loss, Tensor) else None


def rows(n: int, device: torch.device) -> Tensor:
    """The view's ``x``: the indices of the batch's ``n`` rows."""
    return torch.arange(n, device=device)
