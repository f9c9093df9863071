"""When capture windows open and close, and the probe records each one gives.

A window opens at the first step and then every ``every`` steps; it holds forward / backward
hooks until it has seen ``window`` samples (at most ``every // 2`` steps), then every registered
window probe that is due runs on it. The first optimizer step in a window gives the update
ratios. Windows starting on a multiple of ``hist_every`` steps (default :data:`SLOW_FACTOR` x
``every``) also keep tensors for histograms and save the first-layer filters.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from babysit.monitor._capture import Capture
from babysit.monitor._filters import save_filters
from babysit.monitor._updates import StepReading, UpdateProbe, named_parameters
from babysit.monitor.probes import (
    FILTERS,
    GRAD_CARRYOVER,
    PROBES,
    UPDATE_RATIO,
    UPDATE_RATIO_1D,
    WEIGHT_NORM,
)

__all__ = ["SLOW_FACTOR", "Emit", "ProbeWindows"]

SLOW_FACTOR = 10  # histograms and filters in every 10th window

# emit(name, values, step): hand a probe record to the monitor
Emit = Callable[[str, dict[str, Any], int], None]
# event(what, step, fields): hand an event record to the monitor
EmitEvent = Callable[[str, int, dict[str, Any]], None]


class ProbeWindows:
    """Opens and closes the capture windows of one model as the steps go by."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None,
        *,
        every: int,
        window: int,
        bins: int,
        hist_every: int,
        image_shape: tuple[int, ...] | None,
        out_dir: Path | None,
        start_step: int,
        emit: Emit,
        event: EmitEvent,
    ) -> None:
        self.model, self.every, self.window = model, every, window
        self.bins, self.hist_every, self.image_shape = bins, hist_every, image_shape
        self.out_dir, self.emit, self.event = out_dir, emit, event
        self.start = self.step = start_step
        self._capture: Capture | None = None
        self._window_start = 0
        self._data_layer: nn.Module | None = None
        self._input_shape: tuple[int, ...] | None = None
        self._filters_step: int | None = None
        self._no_grad: list[str] = []  # the last "frozen" event's parameters
        self._batch = 0  # the last "batch_size" event's size
        params = named_parameters(model, optimizer)
        self._updates = UpdateProbe(params, optimizer, self._emit_updates, self._emit_carryover)
        self._open()

    def after_step(self, step: int) -> None:
        """The monitor counted ``step``: measure updates, close a full window, open the next."""
        self.step = step
        self._updates.after_step()
        capture = self._capture
        if capture is not None:
            capture.steps += 1
            if capture.rows >= self.window or capture.steps >= max(1, self.every // 2):
                self._close_window()
        if self._capture is None and (step - self.start) % self.every == 0:
            self._open()

    def close(self) -> None:
        """Finish an open window, save the final filters, remove every hook."""
        self._updates.close()
        if self._capture is not None:
            self._close_window()
        if self._filters_step != self.step:
            self._save_filters()

    def _slow_due(self) -> bool:
        return (self._window_start - 1 - self.start) % self.hist_every == 0

    def _open(self) -> None:
        self._window_start = self.step + 1
        self._capture = Capture(self.model, keep=self._slow_due())
        self._updates.arm()

    def _close_window(self) -> None:
        capture, self._capture = self._capture, None
        assert capture is not None
        capture.close()
        if capture.data_layer is not None:
            self._data_layer, self._input_shape = capture.data_layer, capture.input_shape
        if capture.batch > self._batch:  # said once (and if a larger batch comes)
            self._batch = capture.batch
            self.event("batch_size", self.step, {"size": capture.batch})
        slow = self._slow_due()
        for spec in PROBES.values():
            if spec.fn is not None and (spec.cadence == "every" or slow):
                values = spec.fn(capture, self.bins)
                if values:
                    self.emit(spec.name, values, self.step)
        if slow:
            self._save_filters()

    def _hook_step(self) -> int:
        # step hooks run inside optimizer.step(), before the monitor counts that step
        return self.step + 1 if self._updates.hooked else self.step

    def _emit_updates(self, reading: StepReading) -> None:
        step = self._hook_step()
        for name, values in (
            (UPDATE_RATIO, reading.ratios),
            (UPDATE_RATIO_1D, reading.one_dim),
            (WEIGHT_NORM, reading.weight_norms),
        ):
            if values:
                self.emit(name, dict(values), step)
        if reading.no_grad != self._no_grad:  # said once, and again when it changes
            self._no_grad = reading.no_grad
            self.event("frozen", step, {"params": reading.no_grad})

    def _emit_carryover(self, shares: dict[str, float]) -> None:
        self.emit(GRAD_CARRYOVER, shares, self._hook_step())

    def _save_filters(self) -> None:
        if self.out_dir is None or self._data_layer is None:
            return
        relative = f"filters/step={self.step:06d}.png"
        shape = self.image_shape or self._input_shape
        if save_filters(self._data_layer, shape, self.out_dir / relative):
            self._filters_step = self.step
            self.emit(FILTERS, {"path": relative}, self.step)
