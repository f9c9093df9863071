"""metrics.jsonl: its record schema (defined once, here), a buffered writer, a streaming reader.

The file holds one JSON object per line, each with a ``kind`` (DESIGN.md, "Files a user or
a script reads"): :class:`BatchRecord`, :class:`EpochRecord`, :class:`ProbeRecord` and
:class:`EventRecord` say which fields each kind has and what they mean. The monitor writes
records with the constructors :func:`batch_record`, :func:`epoch_record`,
:func:`probe_record` and :func:`event_record`; readers (the diagnoses' history, the report,
the TensorBoard sink) dispatch on :data:`BATCH`, :data:`EPOCH`, :data:`PROBE`, :data:`EVENT`
and read the fields these TypedDicts name (mypy checks the keys). NaN / inf are stored as
the strings "nan", "inf", "-inf" (:mod:`babysit._io`) and read back as floats.

Writes are buffered and flushed at least every ``flush_every`` seconds and on ``flush()``
(the trainer calls it at every epoch end), so a live run can be read while writing costs no
step any time.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any, Literal, Protocol, Required, TextIO, TypedDict, cast

from babysit._io import atomic_open, json_safe, loads_json

__all__ = [
    "AVERAGE_KINDS",
    "BATCH",
    "BATCH_VALUES",
    "EPOCH",
    "EVENT",
    "MAX_LINE_BYTES",
    "PROBE",
    "SETUP_EVENTS",
    "BatchRecord",
    "EpochRecord",
    "EventRecord",
    "MetricsWriter",
    "ProbeRecord",
    "Record",
    "Sink",
    "batch_record",
    "epoch_record",
    "event_record",
    "measurements",
    "probe_record",
    "read_metrics",
    "rewrite_metrics",
]

BATCH, EPOCH, PROBE, EVENT = "batch", "epoch", "probe", "event"  # the record kinds
AVERAGE_KINDS = ("ema", "swa")  # an epoch record's averaged-weights key prefixes
MAX_LINE_BYTES = 8 * 2**20  # a record is a few KB (a histogram probe's: ~100 KB at most)
# events the monitor writes about the setup it watches, not about the training: its settings
# and the optimizer's ("watch"), the batch size it saw, the parameters that get no gradient
SETUP_EVENTS = ("watch", "batch_size", "frozen")


# Values are typed as they are on disk. The monitor hands 0-d tensors to the constructors
# and copies them all to the host at its next sync, before any record is written.
class BatchRecord(TypedDict, total=False):
    """One optimizer step (``Monitor.step``); any further keyword given to step() follows."""

    kind: Required[Literal["batch"]]
    step: Required[int]  # optimizer steps so far, from 1 (a resumed run continues the count)
    epoch: float  # step / steps_per_epoch: fractional (absent until steps_per_epoch is known)
    loss: Required[float]  # the minimised minibatch loss: data_loss + reg_loss
    data_loss: float  # the task's loss alone
    reg_loss: float  # the regularisation term (reg * sum(w**2) over weights by default)
    lr: float
    mu: float | None  # momentum, or Adam's beta1; None for rules without one


class EpochRecord(TypedDict, total=False):
    """One epoch end (``Monitor.log_epoch``); scores use the task's metric name (val_<metric>)."""

    kind: Required[Literal["epoch"]]
    epoch: Required[int]  # epochs done, from 1
    step: Required[int]  # the last step of the epoch
    train_loss: float  # the minibatch data losses of the epoch, averaged (no regularisation)
    train_acc: float  # a fraction in [0, 1], measured on the epoch's minibatches
    val_loss: float  # data loss on the validation split after the epoch
    val_acc: float
    # train.ema / train.swa: the averaged weights' val_loss and val_<metric>, prefixed by
    # their kind (AVERAGE_KINDS): ema_val_loss, ema_val_acc (absent before SWA starts)
    ema_val_loss: float
    ema_val_acc: float


class ProbeRecord(TypedDict, total=False):
    """One probe reading; ``values`` has the shape its probe declares (see ``probes.ProbeSpec``)."""

    kind: Required[Literal["probe"]]
    step: Required[int]
    epoch: float
    name: Required[str]  # a registered probe: probes.PROBES
    values: Required[dict[str, Any]]


class EventRecord(TypedDict, total=False):
    """Something that happened (diverged, resumed, checkpoint, ...); its own fields follow."""

    kind: Required[Literal["event"]]
    step: Required[int]
    what: Required[str]


Record = BatchRecord | EpochRecord | ProbeRecord | EventRecord

# where a record sits in the run: every other key of a record is a measurement
_PLACE = ("kind", "step", "epoch")
# the per-step quantities of a batch record, in file order
BATCH_VALUES: tuple[str, ...] = tuple(k for k in BatchRecord.__annotations__ if k not in _PLACE)


def _placed(kind: str, step: int, epoch: float | None) -> dict[str, Any]:
    """The head every step-placed record starts with: kind, step and, when known, epoch."""
    return (
        {"kind": kind, "step": step}
        if epoch is None
        else {"kind": kind, "step": step, "epoch": epoch}
    )


def batch_record(
    step: int, loss: float, *, epoch: float | None = None, **values: Any
) -> BatchRecord:
    """``{"kind": "batch", "step", ["epoch",] "loss", **values}`` (values: data_loss, ..., mu)."""
    return cast(BatchRecord, {**_placed(BATCH, step, epoch), "loss": loss, **values})


def epoch_record(epoch: int, step: int, **scores: Any) -> EpochRecord:
    """``{"kind": "epoch", "epoch", "step", **scores}`` (train_loss, val_acc, ...)."""
    return cast(EpochRecord, {"kind": EPOCH, "epoch": epoch, "step": step, **scores})


def probe_record(
    step: int, name: str, values: dict[str, Any], *, epoch: float | None = None
) -> ProbeRecord:
    """``{"kind": "probe", "step", ["epoch",] "name", "values"}``."""
    return cast(ProbeRecord, {**_placed(PROBE, step, epoch), "name": name, "values": values})


def event_record(step: int, what: str, **fields: Any) -> EventRecord:
    """``{"kind": "event", "step", "what", **fields}`` (a ``step`` in fields is not allowed)."""
    return cast(EventRecord, {**_placed(EVENT, step, None), "what": what, **fields})


def measurements(record: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    """The (key, value) pairs of a record that are measurements: all but kind, step, epoch."""
    return ((k, v) for k, v in record.items() if k not in _PLACE)


class Sink(Protocol):
    """Where the monitor's records go: :class:`MetricsWriter` (canonical) or TensorBoard."""

    def write(self, record: Mapping[str, Any]) -> None:
        """Take one record (``kind`` plus its fields); may buffer."""

    def flush(self) -> None:
        """Make everything written so far readable."""

    def close(self) -> None:
        """Flush and release the file; idempotent."""


# one encoder for every line (json.dumps with options builds a new one per call)
_STRICT = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


class MetricsWriter:
    """Append JSON lines to ``path``, buffered; ``flush()`` makes everything so far readable."""

    def __init__(self, path: str | os.PathLike[str], *, flush_every: float = 1.0) -> None:
        self.path = Path(path)
        self.flush_every = flush_every
        self._buffer: list[str] = []
        self._last_flush = time.monotonic()
        self._file: TextIO | None = None  # opened at the first flush: nothing logged, no file
        self._closed = False

    def write(self, record: Mapping[str, Any]) -> None:
        try:  # the common case: no NaN/inf, no need to walk the record
            line = _STRICT.encode(record)
        except ValueError:
            line = _STRICT.encode(json_safe(record))
        self._buffer.append(line)
        if time.monotonic() - self._last_flush >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        if self._buffer:
            try:
                if self._file is None:
                    self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - close()
                self._file.write("\n".join(self._buffer) + "\n")
                self._buffer.clear()
                self._file.flush()
            except OSError as exc:  # a full disk: the error names the file
                if exc.filename is None:
                    exc.filename = str(self.path)
                raise
        self._last_flush = time.monotonic()

    def close(self) -> None:
        if not self._closed:
            self.flush()
            if self._file is not None:
                self._file.close()
            self._closed = True

    def __enter__(self) -> MetricsWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def rewrite_metrics(path: str | os.PathLike[str], records: Iterable[Mapping[str, Any]]) -> None:
    """Replace ``path`` atomically with ``records`` (a resume cuts the log back this way)."""
    with atomic_open(path, "w") as f:
        for record in records:
            f.write(_STRICT.encode(json_safe(record)) + "\n")


BadLine = Callable[[int, str], None]  # (line number from 1, what is wrong with it)
_JSON_TYPES: dict[type, str] = {list: "array", str: "string", int: "number", float: "number"}
_JSON_TYPES.update({bool: "boolean", type(None): "null"})


def read_metrics(
    path: str | os.PathLike[str], *, kind: str | None = None, on_bad: BadLine | None = None
) -> Iterator[dict[str, Any]]:
    """Stream the records of a metrics.jsonl (bounded memory); a torn last line is skipped.

    The file is untrusted (a run dir may come from anywhere): a line that is not UTF-8,
    not JSON, nested too deep (:func:`babysit._io.loads_json`), longer than
    :data:`MAX_LINE_BYTES` or not a JSON object is skipped and, when given, passed to
    ``on_bad(line_number, reason)``. The last line of a live or killed run may be torn
    (no newline yet): it is skipped without a word.
    """
    with open(path, "rb") as f:
        for number, raw, whole in _lines(f):
            complete = raw.endswith(b"\n")
            raw = raw.strip()
            if not raw:
                continue
            try:
                record = loads_json(raw) if whole else None
            except UnicodeDecodeError:
                reason = "not valid UTF-8"
            except ValueError as exc:
                if not complete:
                    continue  # a live run's partly written last line
                reason = f"not valid JSON ({exc})"
            else:
                if isinstance(record, dict):
                    if kind is None or record.get("kind") == kind:
                        yield record
                    continue
                reason = (
                    f"a JSON {_JSON_TYPES.get(type(record), 'value')}, not an object"
                    if whole
                    else f"longer than {MAX_LINE_BYTES // 2**20} MiB"
                )
            if on_bad is not None:
                on_bad(number, reason)


def _lines(f: IO[bytes]) -> Iterator[tuple[int, bytes, bool]]:
    """(line number, bytes, whole?) per line; a line past MAX_LINE_BYTES is read no further."""
    number = 0
    while raw := f.readline(MAX_LINE_BYTES + 1):
        number += 1
        if len(raw) <= MAX_LINE_BYTES or raw.endswith(b"\n"):
            yield number, raw, True
            continue
        while (rest := f.readline(MAX_LINE_BYTES)) and not rest.endswith(b"\n"):
            pass  # skip to the end of the overlong line without holding it
        yield number, b"-\n", False
