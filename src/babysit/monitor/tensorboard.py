"""TensorBoard sink: the monitor's records as scalars, histograms, images and text.

Needs the ``tensorboard`` extra (``pip install 'babysit[tensorboard]'``); metrics.jsonl stays
the canonical record. Every value is logged at the record's training step:

- batch: ``batch/loss``, ``batch/data_loss``, ``batch/reg_loss``, ``batch/lr``, ``batch/mu``
- epoch: ``epoch/<key>`` (train_loss, val_acc, ...)
- probe: ``update_ratio/<param>``, ``grad_norm/<layer>``, ``act_stats/<layer>/<stat>``;
  ``act_hist/<layer>`` and ``grad_hist/<layer>`` as histograms; ``filters`` as an image
- event: text under ``events``
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from babysit.errors import ConfigError

__all__ = ["TensorBoardSink"]


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
        self._kinds: dict[str, Callable[[dict[str, Any], int], None]] = {
            "batch": self._batch,
            "epoch": self._epoch,
            "probe": self._probe,
            "event": self._event,
        }

    def write(self, record: dict[str, Any]) -> None:
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

    def _batch(self, record: dict[str, Any], step: int) -> None:
        for key in ("loss", "data_loss", "reg_loss", "lr", "mu"):
            self._scalar(f"batch/{key}", record.get(key), step)

    def _epoch(self, record: dict[str, Any], step: int) -> None:
        for key, value in record.items():
            if key not in ("kind", "step"):
                self._scalar(f"epoch/{key}", value, step)

    def _probe(self, record: dict[str, Any], step: int) -> None:
        name, values = record.get("name", ""), record.get("values", {})
        if name in ("act_hist", "grad_hist"):
            for layer, hist in values.items():
                self._histogram(f"{name}/{layer}", hist, step)
        elif name == "filters":
            self._image(values.get("path"), step)
        else:
            for key, value in values.items():
                if isinstance(value, dict):  # act_stats: {layer: {stat: value}}
                    for stat, v in value.items():
                        self._scalar(f"{name}/{key}/{stat}", v, step)
                else:
                    self._scalar(f"{name}/{key}", value, step)

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

    def _image(self, relative: Any, step: int) -> None:
        if not isinstance(relative, str) or not (self.run_dir / relative).is_file():
            return
        import numpy as np
        from PIL import Image

        image = np.asarray(Image.open(self.run_dir / relative))
        self._writer.add_image(
            "filters", image, step, dataformats="HW" if image.ndim == 2 else "HWC"
        )

    def _event(self, record: dict[str, Any], step: int) -> None:
        fields = ", ".join(
            f"{k}={v}" for k, v in record.items() if k not in ("kind", "step", "what")
        )
        self._writer.add_text("events", f"{record.get('what')}: {fields}", step)
