"""TensorBoard sink: the monitor's records as scalars, histograms, images and text.

Needs the ``tensorboard`` extra (``pip install 'babysit[tensorboard]'``); metrics.jsonl stays
the canonical record. Every value is logged at the record's training step:

- batch: ``batch/<field>`` for each of ``log.BATCH_VALUES`` (loss, data_loss, ..., mu)
- epoch: ``epoch/<key>`` (train_loss, val_acc, ...)
- probe: by the kind its ``probes.ProbeSpec`` declares: per_layer_scalar as
  ``<probe>/<layer>`` scalars (``update_ratio/fc1.weight``), per_layer_stats as
  ``<probe>/<layer>/<stat>`` scalars, histogram as ``<probe>/<layer>`` histograms, image as
  the image ``<probe>`` (``filters``); records of probes not registered are left out
- event: text under ``events``
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from babysit.errors import ConfigError
from babysit.monitor import log
from babysit.monitor.probes import PROBES, ProbeKind

__all__ = ["TensorBoardSink"]


_EVENT_HEAD = ("kind", "step", "what")  # an event's text: the fields after these


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class TensorBoardSink:
    """Write records to TensorBoard event files in ``log_dir`` (filters read from ``run_dir``)."""

    def __init__(self, log_dir: str | Path, *, run_dir: str | Path | None = None) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError(
                "watch(tensorboard=True): the tensorboard package is missing;"
                " install it with pip install 'babysit[tensorboard]'"
            ) from None
        self.log_dir = Path(log_dir)
        self.run_dir = Path(run_dir) if run_dir is not None else self.log_dir.parent
        self._writer = SummaryWriter(log_dir=str(self.log_dir))
        self._closed = False
        self._kinds: dict[str, Callable[[Any, int], None]] = {
            log.BATCH: self._batch,
            log.EPOCH: self._epoch,
            log.PROBE: self._probe,
            log.EVENT: self._event,
        }
        self._probe_kinds: dict[ProbeKind, Callable[[str, dict[str, Any], int], None]] = {
            "per_layer_scalar": self._per_layer,
            "per_layer_stats": self._per_layer_stats,
            "histogram": self._histograms,
            "image": self._image,
        }

    def write(self, record: Mapping[str, Any]) -> None:
        handler = self._kinds.get(record.get("kind", ""))
        if handler is not None and not self._closed:
            handler(record, int(record.get("step", 0)))

    def flush(self) -> None:
        if not self._closed:
            self._writer.flush()

    def close(self) -> None:
        if not self._closed:
            self._writer.close()
            self._closed = True

    def _scalar(self, tag: str, value: Any, step: int) -> None:
        if _number(value):
            self._writer.add_scalar(tag, float(value), step)

    def _batch(self, record: log.BatchRecord, step: int) -> None:
        for key in log.BATCH_VALUES:
            self._scalar(f"batch/{key}", record.get(key), step)

    def _epoch(self, record: log.EpochRecord, step: int) -> None:
        for key, value in log.measurements(record):
            self._scalar(f"epoch/{key}", value, step)

    def _probe(self, record: log.ProbeRecord, step: int) -> None:
        spec, values = PROBES.get(record.get("name", "")), record.get("values")
        if spec is not None and isinstance(values, dict):
            self._probe_kinds[spec.kind](spec.name, values, step)

    def _per_layer(self, name: str, values: dict[str, Any], step: int) -> None:
        for layer, value in values.items():
            self._scalar(f"{name}/{layer}", value, step)

    def _per_layer_stats(self, name: str, values: dict[str, Any], step: int) -> None:
        for layer, stats in values.items():
            for stat, value in stats.items() if isinstance(stats, dict) else ():
                self._scalar(f"{name}/{layer}/{stat}", value, step)

    def _histograms(self, name: str, values: dict[str, Any], step: int) -> None:
        for layer, hist in values.items():
            self._histogram(f"{name}/{layer}", hist, step)

    def _histogram(self, tag: str, hist: dict[str, Any], step: int) -> None:
        """A pre-binned histogram; sum and sum of squares are taken at the bin centres."""
        edges, counts = hist["edges"], hist["counts"]
        if not counts or not all(math.isfinite(e) for e in edges):
            return
        centres = [(a + b) / 2 for a, b in itertools.pairwise(edges)]
        self._writer.add_histogram_raw(
            tag,
            min=edges[0],
            max=edges[-1],
            num=sum(counts),
            sum=sum(c * n for c, n in zip(centres, counts, strict=True)),
            sum_squares=sum(c * c * n for c, n in zip(centres, counts, strict=True)),
            bucket_limits=edges[1:],
            bucket_counts=counts,
            global_step=step,
        )

    def _image(self, name: str, values: dict[str, Any], step: int) -> None:
        relative = values.get("path")
        if not isinstance(relative, str) or not (self.run_dir / relative).is_file():
            return
        import numpy as np
        from PIL import Image

        image = np.asarray(Image.open(self.run_dir / relative))
        self._writer.add_image(name, image, step, dataformats="HW" if image.ndim == 2 else "HWC")

    def _event(self, record: log.EventRecord, step: int) -> None:
        fields = ", ".join(f"{k}={v}" for k, v in record.items() if k not in _EVENT_HEAD)
        self._writer.add_text("events", f"{record.get('what')}: {fields}", step)
