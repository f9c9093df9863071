"""metrics.jsonl: a buffered writer and a streaming reader; optional TensorBoard sink.

The file holds one JSON object per line, each with a ``kind``:
``"batch"`` (step, epoch as a fraction, loss, data_loss, reg_loss, lr, mu),
``"epoch"`` (epoch, train_loss, train_acc, val_loss, val_<metric>),
``"probe"`` (step, name, values) and ``"event"`` (step, what, ...).
Writes are buffered and flushed at least every ``flush_every`` seconds and on
``flush()`` (the trainer calls it at every epoch end), so a live run can be read
while writing costs no step any time.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol, TextIO

from babysit._io import atomic_open, json_restore, json_safe

__all__ = ["MetricsWriter", "Sink", "read_metrics", "rewrite_metrics"]


class Sink(Protocol):
    """Where the monitor's records go: :class:`MetricsWriter` (canonical) or TensorBoard."""

    def write(self, record: dict[str, Any]) -> None:
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

    def write(self, record: dict[str, Any]) -> None:
        try:  # the common case: no NaN/inf, no need to walk the record
            line = _STRICT.encode(record)
        except ValueError:
            line = _STRICT.encode(json_safe(record))
        self._buffer.append(line)
        if time.monotonic() - self._last_flush >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        if self._buffer:
            if self._file is None:
                self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - see close()
            self._file.write("\n".join(self._buffer) + "\n")
            self._buffer.clear()
            self._file.flush()
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


def rewrite_metrics(path: str | os.PathLike[str], records: Iterable[dict[str, Any]]) -> None:
    """Replace ``path`` atomically with ``records`` (a resume cuts the log back this way)."""
    with atomic_open(path, "w") as f:
        for record in records:
            f.write(_STRICT.encode(json_safe(record)) + "\n")


def read_metrics(
    path: str | os.PathLike[str], *, kind: str | None = None
) -> Iterator[dict[str, Any]]:
    """Stream the records of a metrics.jsonl (bounded memory); a torn last line is skipped."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a live run's partly written last line
            if kind is None or record.get("kind") == kind:
                yield json_restore(record)
