"""``babysit.watch()``: babysit the user's own PyTorch loop (the built-in trainer uses it too).

One line before the loop, one inside it, one where you evaluate::

    with babysit.watch(model, optimizer, log_dir="runs/mine", steps_per_epoch=len(loader)) as mon:
        for epoch in range(epochs):
            for x, y in loader:
                loss = F.cross_entropy(model(x), y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                mon.step(loss)
            mon.log_epoch(val_acc=evaluate(model))
    for finding in mon.findings():
        print(finding)

Default cadence (see benchmarks/monitor_overhead.py for its cost): a capture window opens at
the first step and then every ``every`` = 50 steps. It holds forward / backward hooks for
``window`` = 256 samples (at most ``every // 2`` steps) and gives ``act_stats`` and
``grad_norm``; the first optimizer step in it gives ``update_ratio``. Histograms
(``act_hist``, ``grad_hist``) and the first-layer filters are taken in every 10th window, and
the filters again at close. Between windows no hook is installed: a step costs one small Python
record, and losses stay on the device until they are written (every 64 steps, each second,
and at every epoch end), with one host sync for all of them. GradScaler-skipped steps and
gradient accumulation are handled by the optimizer step hooks (see ``_updates``). Under DDP
only rank 0 logs; the other ranks' monitors do nothing. ``findings.json`` (the diagnoses, the
one to act on first) is written next to metrics.jsonl at every ``log_epoch`` and on ``close``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from types import TracebackType
from typing import Any, cast

import torch
from torch import Tensor, nn

from babysit.errors import ConfigError
from babysit.monitor._findings import Finding
from babysit.monitor._history import RunHistory
from babysit.monitor._stats import to_python
from babysit.monitor._updates import training_setup
from babysit.monitor._windows import SLOW_FACTOR, ProbeWindows
from babysit.monitor.log import (
    MetricsWriter,
    Record,
    Sink,
    batch_record,
    epoch_record,
    event_record,
    probe_record,
)

__all__ = ["DEFAULT_EVERY", "DEFAULT_WINDOW", "Monitor", "watch"]

DEFAULT_EVERY = 50  # steps between capture windows
DEFAULT_WINDOW = 256  # samples a capture window sees (dead units: never active over these)
SYNC_EVERY = 64  # steps between host syncs of the buffered losses


def _is_logging_rank() -> bool:
    dist = torch.distributed
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def _momentum(group: dict[str, Any]) -> float | None:
    if "momentum" in group:
        return float(group["momentum"])
    betas = group.get("betas")
    return float(betas[0]) if betas is not None else None


def _positive(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"watch({name}={value!r}): must be a positive int; leave the default")
    return value


def _detached(value: Any) -> Any:
    return value.detach() if isinstance(value, Tensor) else value


class Monitor:
    """Probes, records and diagnoses one training run; made by :func:`watch` (see there).

    The options have no defaults here: :func:`watch`'s signature is their one home.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None,
        *,
        log_dir: str | os.PathLike[str] | None,
        every: int,
        writer: MetricsWriter | None,
        steps_per_epoch: int | None,
        tensorboard: bool,
        window: int,
        bins: int,
        hist_every: int | None,
        chance_loss: float | None,
        image_shape: tuple[int, ...] | None,
        start_step: int,
        write_findings: bool = True,
    ) -> None:
        # every option is checked before anything is written (and on every rank)
        self.optimizer = optimizer
        self.every = _positive("every", every)
        window, bins = _positive("window", window), _positive("bins", bins)
        hist = SLOW_FACTOR * self.every if hist_every is None else hist_every
        hist = _positive("hist_every", hist)
        spe = steps_per_epoch
        self.steps_per_epoch = None if spe is None else _positive("steps_per_epoch", spe)
        self.dir = (
            Path(log_dir) if log_dir is not None else (writer.path.parent if writer else None)
        )
        if tensorboard and self.dir is None:
            raise ConfigError("watch(tensorboard=True) needs log_dir= (or writer=) to write to")
        self._active = _is_logging_rank()  # False on DDP ranks other than 0, and once closed
        self._start = self._step = start_step
        self.write_findings = write_findings  # False: the caller owns findings.json
        self._epoch = 0
        self._history = RunHistory()
        self._pending: list[Record] = []  # values may be 0-d tensors until the next sync
        self._last_sync = time.monotonic()
        self._sinks: list[Sink] = []
        self._owned: list[Sink] = []
        self._windows: ProbeWindows | None = None
        if not self._active:
            return
        if writer is not None:
            self._sinks.append(writer)
        elif self.dir is not None:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._own(MetricsWriter(self.dir / "metrics.jsonl"))
        if tensorboard and self.dir is not None:
            from babysit.monitor.tensorboard import TensorBoardSink

            self._own(TensorBoardSink(self.dir / "tensorboard", run_dir=self.dir))
        settings = {"every": self.every, "window": window, "steps_per_epoch": self.steps_per_epoch}
        self.event("watch", **settings, chance_loss=chance_loss, **training_setup(model, optimizer))
        self._windows = ProbeWindows(
            model,
            optimizer,
            every=self.every,
            window=window,
            bins=bins,
            hist_every=hist,
            image_shape=image_shape,
            out_dir=self.dir,
            start_step=start_step,
            emit=self._probe,
            event=lambda what, step, fields: self.event(what, step=step, **fields),
        )

    def _own(self, sink: Sink) -> None:
        self._sinks.append(sink)
        self._owned.append(sink)

    # --- the user's calls ------------------------------------------------------------
    def step(self, loss: Tensor | float, **extra: Any) -> None:
        """Record one training step (call after ``optimizer.step()``).

        Writes ``{"kind": "batch", "step", "epoch", "loss", **extra, "lr", "mu"}``; ``lr`` and
        ``mu`` (momentum, or Adam's beta1) are read from the optimizer when not given. Tensors
        stay on the device until the next sync.
        """
        if not self._active:
            return
        self._step += 1
        values = {key: _detached(value) for key, value in extra.items()}
        if self.optimizer is not None:
            group = self.optimizer.param_groups[0]
            values.setdefault("lr", group["lr"])
            values.setdefault("mu", _momentum(group))
        # a "step" or "epoch" given by the caller wins (as for epoch and event records)
        epoch = values.pop("epoch", self._epoch_at(self._step))
        step = values.pop("step", self._step)
        self._pending.append(batch_record(step, _detached(loss), epoch=epoch, **values))
        if self._windows is not None:
            self._windows.after_step(self._step)
        if len(self._pending) >= SYNC_EVERY or time.monotonic() - self._last_sync >= 1.0:
            self._sync()

    def log_epoch(self, **metrics: Any) -> None:
        """Write an ``{"kind": "epoch", "epoch", "step", **metrics}`` record, flush, and
        rewrite ``<log dir>/findings.json`` with the diagnoses so far.

        ``epoch`` counts the calls unless given. Without ``steps_per_epoch``, the steps up to
        the first call set it (later records then carry fractional epochs).
        """
        if not self._active:
            return
        given = metrics.pop("epoch", None)
        self._epoch = int(given) if given is not None else self._epoch + 1
        if self.steps_per_epoch is None and self._epoch == 1 and self._step > self._start:
            self.steps_per_epoch = self._step - self._start
        scores = {key: _detached(value) for key, value in metrics.items()}
        step = scores.pop("step", self._step)
        self._pending.append(epoch_record(self._epoch, step, **scores))
        self.flush()
        self._write_findings()

    def event(self, what: str, **fields: Any) -> None:
        """Write an ``{"kind": "event", "step", "what", **fields}`` record (diverged, ...)."""
        if self._active:
            step = fields.pop("step", self._step)  # the trainer dates a diverged step itself
            self._pending.append(event_record(step, what, **fields))

    def findings(self) -> list[Finding]:
        """The diagnoses over everything recorded so far, most severe first."""
        from babysit.monitor.diagnose import run_diagnoses

        return run_diagnoses(self.metrics)

    def flush(self) -> None:
        """Write every buffered record and make it readable in the sinks."""
        if self._active:
            self._sync()
            for sink in self._sinks:
                sink.flush()

    def close(self) -> None:
        """Remove every hook, write what is buffered and findings.json, close the sinks it
        opened; idempotent."""
        if not self._active:
            return
        if self._windows is not None:
            self._windows.close()
        self.flush()
        self._write_findings()
        self._active = False
        for sink in self._owned:
            sink.close()

    def __enter__(self) -> Monitor:
        return self

    def __exit__(
        self, tp: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def metrics(self) -> RunHistory:
        """The bounded in-memory summary that :meth:`findings` diagnoses."""
        self._sync()
        return self._history

    # --- records ---------------------------------------------------------------------
    def _write_findings(self) -> None:
        """``<dir>/findings.json``: the diagnoses so far, the one to act on first (atomic)."""
        if self.dir is not None and self.write_findings:
            from babysit.monitor.diagnose import write_findings

            write_findings(self.dir / "findings.json", self.findings())

    def _epoch_at(self, step: int) -> float | None:
        return step / self.steps_per_epoch if self.steps_per_epoch else None

    def _probe(self, name: str, values: dict[str, Any], step: int) -> None:
        self._pending.append(probe_record(step, name, values, epoch=self._epoch_at(step)))

    def _sync(self) -> None:
        """Copy the buffered tensors to the host (one sync) and write the records."""
        pending, self._pending = self._pending, []
        self._last_sync = time.monotonic()
        held = cast(list[dict[str, Any]], pending)  # the records' tensors become floats here
        slots = [(r, k) for r in held for k, v in r.items() if isinstance(v, Tensor)]
        values = to_python([r[k] for r, k in slots]) if slots else []
        for (held_record, key), value in zip(slots, values, strict=True):
            held_record[key] = value
        for record in pending:
            for sink in self._sinks:
                sink.write(record)
            self._history.add(record)


def watch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    log_dir: str | os.PathLike[str] | None = None,
    every: int = DEFAULT_EVERY,
    writer: MetricsWriter | None = None,
    steps_per_epoch: int | None = None,
    tensorboard: bool = False,
    window: int = DEFAULT_WINDOW,
    bins: int = 30,
    hist_every: int | None = None,
    chance_loss: float | None = None,
    image_shape: tuple[int, ...] | None = None,
    start_step: int = 0,
    write_findings: bool = True,
) -> Monitor:
    """Start babysitting ``model`` (and ``optimizer``'s steps); returns the :class:`Monitor`.

    log_dir: creates ``log_dir/metrics.jsonl`` (and ``filters/``, ``tensorboard/``); or
    writer: an open MetricsWriter that the caller owns (it is flushed, never closed).
    every: steps between capture windows (default 50; see the module docstring).
    steps_per_epoch: makes epochs fractional from the first step (else set by the first
    log_epoch). tensorboard: also write TensorBoard events (needs the ``tensorboard`` extra).
    window: samples per capture window; bins: histogram bins; hist_every: steps between the
    windows that take histograms and filters (default 10 x every); chance_loss: the loss at chance
    (ln C for C classes) for the not_learning diagnosis; image_shape: (C, H, W) or (H, W) of
    flat inputs, to draw a dense first layer's filters; start_step: steps already done (resume);
    write_findings: False when the caller writes findings.json itself (babysit's trainer).
    """
    return Monitor(
        model,
        optimizer,
        log_dir=log_dir,
        every=every,
        writer=writer,
        steps_per_epoch=steps_per_epoch,
        tensorboard=tensorboard,
        window=window,
        bins=bins,
        hist_every=hist_every,
        chance_loss=chance_loss,
        image_shape=image_shape,
        start_step=start_step,
        write_findings=write_findings,
    )
