"""What the diagnoses read: :class:`RunHistory`, a bounded summary of a run's records.

Fed live by the monitor or from a metrics.jsonl (records as :mod:`~babysit.monitor.log`
defines them).
Memory stays bounded however long the run: the whole loss curve is kept as at most
:data:`CAPACITY` means of ``stride`` consecutive steps (the stride doubles when full), plus
the first :data:`HEAD` raw losses (the initial level) and the last :data:`RECENT` raw losses
(batch-to-batch noise); per probe name the first and the last :data:`PROBE_KEEP` records.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from babysit.monitor import log

__all__ = [
    "CAPACITY",
    "HEAD",
    "PROBE_KEEP",
    "RECENT",
    "Curve",
    "ProbeHistory",
    "RunHistory",
]

HEAD = 5
RECENT = 1000
CAPACITY = 2048
PROBE_KEEP = 256
EPOCH_KEEP = 10_000
EVENT_KEEP = 1_000


class Curve:
    """A loss curve decimated to at most ``capacity`` points, each the mean of ``stride`` steps."""

    def __init__(self, capacity: int = CAPACITY) -> None:
        self.capacity = capacity
        self.stride = 1
        self.steps: list[float] = []
        self.epochs: list[float] = []  # nan where the records had no epoch
        self.values: list[float] = []
        self._acc = [0.0, 0.0, 0.0]
        self._n = 0

    def add(self, step: float, epoch: float, value: float) -> None:
        self._acc[0] += step
        self._acc[1] += epoch
        self._acc[2] += value
        self._n += 1
        if self._n == self.stride:
            self.steps.append(self._acc[0] / self._n)
            self.epochs.append(self._acc[1] / self._n)
            self.values.append(self._acc[2] / self._n)
            self._acc, self._n = [0.0, 0.0, 0.0], 0
            if len(self.values) >= self.capacity:
                for xs in (self.steps, self.epochs, self.values):
                    xs[:] = [(a + b) / 2 for a, b in zip(xs[0::2], xs[1::2], strict=False)]
                self.stride *= 2

    def __len__(self) -> int:
        return len(self.values)


@dataclass
class ProbeHistory:
    """The first record of a probe and the latest :data:`PROBE_KEEP`, as (step, values)."""

    first: tuple[int, dict[str, Any]]
    latest: deque[tuple[int, dict[str, Any]]] = field(
        default_factory=lambda: deque(maxlen=PROBE_KEEP)
    )

    @property
    def last(self) -> tuple[int, dict[str, Any]]:
        return self.latest[-1] if self.latest else self.first


@dataclass
class RunHistory:
    """A run's records, summarised for the diagnoses (feed with :meth:`add`).

    Not ``Metrics``: that word already names metrics.jsonl, the epoch scores given to
    ``Monitor.log_epoch(**metrics)`` and the training's metric functions; this is the
    run's history, kept in bounded memory.
    """

    chance_loss: float | None = None
    steps_per_epoch: float | None = None
    curve: Curve = field(default_factory=Curve)
    head: list[float] = field(default_factory=list)
    recent: deque[float] = field(default_factory=lambda: deque(maxlen=RECENT))
    nonfinite: dict[str, Any] | None = None  # the first NaN/inf loss: {"step", "loss"}
    # the watch event's optimizer (class name), largest weight_decay, requires_grad=False names
    optimizer: str | None = None
    weight_decay: float | None = None
    frozen: list[str] = field(default_factory=list)
    no_grad: list[str] = field(default_factory=list)  # held by the optimizer, never a gradient
    batch_size: int | None = None  # the most examples in one forward pass ("batch_size" events)
    lr: float | None = None  # the latest step's learning rate
    reg_share: deque[float] = field(default_factory=lambda: deque(maxlen=100))  # reg / loss
    last_step: int = 0
    last_epoch: float | None = None
    epochs: deque[log.EpochRecord] = field(default_factory=lambda: deque(maxlen=EPOCH_KEEP))
    probes: dict[str, ProbeHistory] = field(default_factory=dict)
    events: deque[log.EventRecord] = field(default_factory=lambda: deque(maxlen=EVENT_KEEP))

    @classmethod
    def from_records(cls, records: Iterable[Mapping[str, Any]]) -> RunHistory:
        history = cls()
        for record in records:
            history.add(record)
        return history

    def add(self, record: Mapping[str, Any]) -> None:
        """Take one record of any kind (a record of another kind is ignored)."""
        handler = self._handlers.get(record.get("kind"))  # type: ignore[arg-type]
        if handler is not None:
            handler(self, record)

    def _batch(self, record: log.BatchRecord) -> None:
        loss = record.get("loss")
        if not isinstance(loss, int | float):
            return
        loss = float(loss)
        step = int(record.get("step", self.last_step + 1))
        epoch = record.get("epoch")
        if epoch is None and self.steps_per_epoch:
            epoch = step / self.steps_per_epoch
        self.last_step = step
        self.last_epoch = None if epoch is None else float(epoch)
        lr, reg = record.get("lr"), record.get("reg_loss")
        if isinstance(lr, int | float):
            self.lr = float(lr)
        if isinstance(reg, int | float) and math.isfinite(reg) and loss > 0:
            self.reg_share.append(float(reg) / loss)
        if not math.isfinite(loss):
            if self.nonfinite is None:
                self.nonfinite = {"step": step, "loss": loss}
            return
        if len(self.head) < HEAD:
            self.head.append(loss)
        self.recent.append(loss)
        self.curve.add(step, math.nan if epoch is None else float(epoch), loss)

    def _epoch(self, record: log.EpochRecord) -> None:
        self.epochs.append(record)
        if self.steps_per_epoch is None and record.get("epoch") == 1 and record.get("step"):
            self.steps_per_epoch = float(record["step"])  # as the monitor infers it

    def _probe(self, record: log.ProbeRecord) -> None:
        values = record.get("values")
        if not isinstance(values, dict):
            return
        step = int(record.get("step", self.last_step))
        history = self.probes.get(record["name"])
        if history is None:
            self.probes[record["name"]] = ProbeHistory((step, values))
        else:
            history.latest.append((step, values))

    def _event(self, record: log.EventRecord) -> None:
        self.events.append(record)
        what = record.get("what")
        fields: dict[str, Any] = dict(record)  # each kind of event has its own fields
        if what == "watch":  # the monitor's settings, written first
            for key in ("chance_loss", "steps_per_epoch", "weight_decay"):
                value = fields.get(key)
                if isinstance(value, int | float):
                    setattr(self, key, float(value))
            optimizer = fields.get("optimizer")
            self.optimizer = optimizer if isinstance(optimizer, str) else None
            self.frozen = [str(n) for n in fields.get("frozen") or []]
        elif what == "batch_size" and isinstance(fields.get("size"), int):
            self.batch_size = int(fields["size"])
        elif what == "frozen":
            self.no_grad = sorted(set(self.no_grad) | {str(n) for n in fields.get("params") or []})
        elif what == "diverged" and self.nonfinite is None:
            self.nonfinite = {"step": record.get("step"), "loss": record.get("loss")}

    _handlers: ClassVar[dict[str, Callable[[RunHistory, Any], None]]] = {
        log.BATCH: _batch,
        log.EPOCH: _epoch,
        log.PROBE: _probe,
        log.EVENT: _event,
    }

    @property
    def initial_loss(self) -> float | None:
        """The loss at the start: the first finite batch loss, or the median of the first
        :data:`HEAD` when that is lower (a noisy first batch). Not the median alone: a too-high
        lr can blow the loss up from the second step on."""
        return min(self.head[0], statistics.median(self.head)) if self.head else None

    @property
    def reference_loss(self) -> float | None:
        """The loss "at chance": the given chance loss, else the initial loss."""
        return self.chance_loss if self.chance_loss is not None else self.initial_loss

    @property
    def epochs_done(self) -> float:
        """How many epochs the batch records span (from epoch fractions or epoch records)."""
        if self.last_epoch is not None:
            return self.last_epoch
        return float(len(self.epochs))
