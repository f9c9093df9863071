"""Read a run dir into bounded summaries: one streamed pass over metrics.jsonl, then the JSONs.

Records are read as :mod:`babysit.monitor.log` defines them, probes by the kind their
:class:`~babysit.monitor.probes.ProbeSpec` declares (every registered probe is read; records
of other names are left out). Every per-step quantity becomes a
:class:`~babysit.report._series.Series` of at most a few hundred buckets, histograms and
images are thinned snapshots, so memory does not grow with the length of the run. Steps are
mapped to epochs with the (step, epoch) pairs the batch and probe records carry; a loop that
logs no epochs is plotted against the iteration. A loop watched without ``steps_per_epoch``
writes its first epoch's records before the monitor knows an epoch's length: the first
``log_epoch`` sets it (``steps_per_epoch = its step - the start``, epoch = step /
steps_per_epoch, as the monitor does from then on), and the report maps that epoch's steps
the same way instead of drawing them all at its end.

Every file of a run dir is untrusted input (a run dir may come from anywhere): a line of
metrics.jsonl that is not a record (not UTF-8, not JSON, nested too deep, not an object),
a histogram with non-finite or unordered edges, an optional file that is malformed or
cannot be read are left out, and :attr:`RunData.skipped` says what and why (the page shows
it). Only a run dir without a readable metrics.jsonl is a :class:`ReportError`.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from babysit.monitor import log
from babysit.monitor.probes import PROBES, ProbeKind, ProbeSpec
from babysit.report._page import ReportError
from babysit.report._series import Downsampler, Hist, Keyed, Series, Thinned
from babysit.report._untrusted import hist_arrays, read_json, read_toml

__all__ = ["RunData", "json_number", "load_run"]

MAX_EVENTS_PER_KIND = 50
MAX_BAD_LINES_SHOWN = 3  # the first few bad lines of metrics.jsonl are named on the page
MAX_LAYERS = 64  # per probe: histograms of more layers are counted in ``dropped``

Layers = dict[str, Series]  # layer (or parameter) name -> its series


@dataclass
class RunData:
    """What the run page shows; every field may be empty (a user's loop may log only losses)."""

    run_dir: Path
    config: dict[str, Any] | None = None
    findings: list[dict[str, Any]] | None = None  # None: no findings.json
    gradcheck: dict[str, Any] | None = None
    sanity: dict[str, Any] | None = None
    records: Counter[str] = field(default_factory=Counter)  # records per kind
    batch: dict[str, Series] = field(default_factory=dict)  # log.BATCH_VALUES present
    epochs: dict[str, Series] = field(default_factory=dict)  # epoch-record keys
    # by probe name, as their ProbeSpec.kind says; only probes with readings appear
    scalars: dict[str, Layers] = field(default_factory=dict)  # per_layer_scalar
    stats: dict[str, dict[str, Layers]] = field(default_factory=dict)  # per_layer_stats: stat ->
    hists: dict[str, dict[str, list[Hist]]] = field(default_factory=dict)  # histogram: layer ->
    images: dict[str, list[tuple[float, str]]] = field(default_factory=dict)  # image: (x, path)
    events: dict[str, list[float]] = field(default_factory=dict)  # what -> x of first 50
    event_counts: Counter[str] = field(default_factory=Counter)
    dropped: int = 0  # probe records of names past the per-probe cap
    last_step: float = math.nan
    unit: str = "iteration"  # x unit of per-step series: "epoch" when epochs were logged
    skipped: dict[str, str] = field(default_factory=dict)  # file -> what was left out, why


ProbeHandler = Callable[[float, dict[str, Any]], None]  # (step, values)


def json_number(value: Any) -> float | None:
    """A JSON number as a float (bool and anything else: None)."""
    return float(value) if type(value) in (float, int) else None  # type(): bool is no number


class _Reader:
    """The single streamed pass: one handler per record kind, one per registered probe."""

    def __init__(self) -> None:
        self.kinds: Counter[str] = Counter()
        self.batch = {f: Downsampler(1024) for f in log.BATCH_VALUES}
        self.clock = Downsampler(1024)  # (step, epoch) pairs: maps steps to epochs
        # the first epoch's length still to be learnt from its epoch record: the start step
        # of a monitor without steps_per_epoch (0 when no "watch" event says otherwise)
        self.infer_from: float | None = 0.0
        self.anchors: list[tuple[float, float]] = []  # (step, epoch) pairs so learnt
        self.epochs_by_step = Keyed(max_keys=32, buckets=512)
        self.epochs_by_epoch = Keyed(max_keys=32, buckets=512)
        self.scalars: dict[str, Keyed] = {}
        self.stats: dict[str, dict[str, Keyed]] = {}
        self.hists: dict[str, dict[str, Thinned[Hist]]] = {}
        self.images: dict[str, Thinned[tuple[float, str]]] = {}
        self.events: dict[str, list[float]] = {}
        self.event_counts: Counter[str] = Counter()
        self.dropped = 0
        self.bad_lines: list[str] = []  # "line N: reason" of the first few bad lines
        self.bad_line_count = 0
        self.bad_hists = 0  # histogram snapshots with non-finite or unordered edges
        self.last_step = -math.inf
        self.handlers: dict[str, Callable[[Any], None]] = {
            log.BATCH: self.on_batch,
            log.EPOCH: self.on_epoch,
            log.PROBE: self.on_probe,
            log.EVENT: self.on_event,
        }
        readers: dict[ProbeKind, Callable[[ProbeSpec], ProbeHandler]] = {
            "per_layer_scalar": self._scalar_probe,
            "per_layer_stats": self._stats_probe,
            "histogram": self._hist_probe,
            "image": self._image_probe,
        }
        self.probes = {name: readers[spec.kind](spec) for name, spec in PROBES.items()}

    def read(self, path: Path) -> None:
        for record in log.read_metrics(path, on_bad=self.on_bad_line):
            kind = record.get("kind")
            handler = self.handlers.get(kind) if isinstance(kind, str) else None
            if handler is not None:
                self.kinds[str(kind)] += 1
                handler(record)

    def on_bad_line(self, number: int, reason: str) -> None:
        self.bad_line_count += 1
        if len(self.bad_lines) < MAX_BAD_LINES_SHOWN:
            self.bad_lines.append(f"line {number}: {reason}")

    def skipped(self) -> dict[str, str]:
        """What of metrics.jsonl was left out, for the page (:attr:`RunData.skipped`)."""
        out, more = {}, self.bad_line_count - len(self.bad_lines)
        if self.bad_line_count:
            lines = "; ".join(self.bad_lines + ([f"{more} more"] if more else []))
            out["metrics.jsonl"] = f"{self.bad_line_count} line(s) left out ({lines})"
        if self.bad_hists:
            out["metrics.jsonl histograms"] = (
                f"{self.bad_hists} histogram snapshot(s) with non-finite or unordered edges "
                "(or counts that are not numbers >= 0) left out"
            )
        return out

    def _step(self, record: log.Record, *, clock: bool = True) -> float | None:
        """The record's step (None if it has none); its (step, epoch) pair sets the clock."""
        step = json_number(record.get("step"))
        if step is not None:
            self.last_step = max(self.last_step, step)
            epoch = json_number(record.get("epoch"))
            if epoch is not None and clock:
                self.clock.add(step, epoch)
        return step

    def on_batch(self, record: log.BatchRecord) -> None:
        step = self._step(record)
        if step is None:
            return
        for name, stream in self.batch.items():
            value = json_number(record.get(name))
            if value is not None:
                stream.add(step, value)  # a number, not a bool or a null

    def on_epoch(self, record: log.EpochRecord) -> None:
        # the clock is set by the fractional epochs of batch and probe records only
        step, epoch = self._step(record, clock=False), json_number(record.get("epoch"))
        start = self.infer_from
        if start is not None and epoch == 1 and step is not None and step > start:
            per_epoch = step - start  # what the monitor infers at its first log_epoch
            self.anchors += [(start, start / per_epoch), (step, step / per_epoch)]
            self.infer_from = None
        target, x = (
            (self.epochs_by_step, step) if step is not None else (self.epochs_by_epoch, epoch)
        )
        if x is None:
            return
        for key, value in log.measurements(record):
            y = json_number(value)
            if y is not None:
                target.add(key, x, y)

    def on_probe(self, record: log.ProbeRecord) -> None:
        step, handler = self._step(record), self.probes.get(str(record.get("name")))
        values = record.get("values")
        if step is not None and handler is not None and isinstance(values, dict):
            handler(step, values)

    def _scalar_probe(self, spec: ProbeSpec) -> ProbeHandler:
        layers = self.scalars[spec.name] = Keyed()

        def handle(step: float, values: dict[str, Any]) -> None:
            for key, value in values.items():
                y = json_number(value)
                if y is not None:
                    layers.add(key, step, y)

        return handle

    def _stats_probe(self, spec: ProbeSpec) -> ProbeHandler:
        stats = self.stats[spec.name] = {stat.key: Keyed() for stat in spec.stats}

        def handle(step: float, values: dict[str, Any]) -> None:
            for layer, got in values.items():
                if isinstance(got, dict):
                    for stat, stream in stats.items():
                        y = json_number(got.get(stat))
                        if y is not None:
                            stream.add(layer, step, y)

        return handle

    def _hist_probe(self, spec: ProbeSpec) -> ProbeHandler:
        layers = self.hists[spec.name] = {}

        def handle(step: float, values: dict[str, Any]) -> None:
            for layer, hist in values.items():
                if not isinstance(hist, dict):
                    continue
                edges, counts = hist_arrays(hist)
                if edges is None or counts is None:
                    self.bad_hists += 1  # NaN / unordered edges, strings, negative counts
                    continue
                if counts.size == 0:
                    continue  # an empty snapshot: nothing to draw
                if layer not in layers:
                    if len(layers) >= MAX_LAYERS:
                        self.dropped += 1
                        continue
                    layers[layer] = Thinned(24)
                layers[layer].add(Hist(step, edges, counts))

        return handle

    def _image_probe(self, spec: ProbeSpec) -> ProbeHandler:
        kept = self.images[spec.name] = Thinned(2)  # first, middle and last

        def handle(step: float, values: dict[str, Any]) -> None:
            path = values.get("path")
            if isinstance(path, str):
                kept.add((step, path))

        return handle

    def on_event(self, record: log.EventRecord) -> None:
        step, what = self._step(record), str(record.get("what", "event"))
        if what == "watch":  # a monitor starts: does it know the epoch's length?
            known = json_number(record.get("steps_per_epoch")) is not None
            self.infer_from = None if known else (step or 0.0)
        if what not in self.event_counts and len(self.event_counts) >= 32:
            return
        self.event_counts[what] += 1
        xs = self.events.setdefault(what, [])
        if step is not None and len(xs) < MAX_EVENTS_PER_KIND:
            xs.append(step)


def load_run(run_dir: str | Path) -> RunData:
    """Read ``run_dir`` (a readable metrics.jsonl required; config.toml and the JSONs optional)."""
    root = Path(run_dir)
    if not root.is_dir():
        raise ReportError(f"{root}: not a directory; pass the run dir that holds metrics.jsonl")
    metrics = root / "metrics.jsonl"
    if not metrics.is_file():
        raise ReportError(
            f"{root}: no metrics.jsonl; is this a run dir (written by babysit train or watch)?"
        )
    data = RunData(run_dir=root)
    skipped = data.skipped
    data.config = read_toml(root / "config.toml", skipped)
    data.findings = read_json(root / "findings.json", list, "a list of findings", skipped)
    if data.findings is not None and not all(isinstance(f, dict) for f in data.findings):
        data.findings = [f for f in data.findings if isinstance(f, dict)]
        skipped["findings.json"] = "its entries that are not JSON objects were left out"
    data.gradcheck = read_json(root / "gradcheck.json", dict, "GradcheckReport.to_dict()", skipped)
    data.sanity = read_json(root / "sanity.json", dict, "SanityReport.to_dict()", skipped)
    reader = _Reader()
    try:
        reader.read(metrics)
    except OSError as exc:
        raise ReportError(f"{metrics}: cannot be read ({exc.strerror or exc})") from None
    data.skipped.update(reader.skipped())
    _finish(data, reader)
    return data


def _finish(data: RunData, reader: _Reader) -> None:
    """Turn the reader's streams into series, with steps mapped to epochs where known."""
    clock = reader.clock.series()
    known = np.isfinite(clock.mean)
    steps, epochs = clock.x[known], clock.mean[known]
    early = [(s, e) for s, e in reader.anchors if not steps.size or s < steps.min()]
    if early:  # a first epoch watched without steps_per_epoch (see the module doc)
        steps = np.concatenate([[s for s, _ in early], steps])
        epochs = np.concatenate([[e for _, e in early], epochs])
    order = np.argsort(steps, kind="stable")
    steps, epochs = steps[order], epochs[order]
    unit = "epoch" if steps.size else "iteration"

    def to_x(x: np.ndarray) -> np.ndarray:
        return np.interp(x, steps, epochs) if steps.size else x

    def mapped(series: Series) -> Series:
        return series.with_x(to_x, unit)

    def layers(keyed: Keyed) -> Layers:
        return {k: mapped(s) for k, s in keyed.series().items()}

    def at(x: float) -> float:
        return float(to_x(np.array([x]))[0])

    data.unit = unit
    data.records = reader.kinds
    data.last_step = reader.last_step if math.isfinite(reader.last_step) else math.nan
    data.batch = {k: mapped(s.series()) for k, s in reader.batch.items() if s.total}
    data.epochs = layers(reader.epochs_by_step)
    for key, s in reader.epochs_by_epoch.series("epoch").items():
        data.epochs.setdefault(key, s)
    data.scalars = {name: layers(k) for name, k in reader.scalars.items() if k.streams}
    data.stats = {
        name: {stat: layers(k) for stat, k in stats.items() if k.streams}
        for name, stats in reader.stats.items()
        if any(k.streams for k in stats.values())
    }
    data.hists = {
        name: {
            layer: [Hist(at(h.x), h.edges, h.counts) for h in th.items()]
            for layer, th in by_layer.items()
        }
        for name, by_layer in reader.hists.items()
        if by_layer
    }
    data.images = {
        name: [(at(x), path) for x, path in kept.items()]
        for name, kept in reader.images.items()
        if kept.items()
    }
    data.events = {w: list(to_x(np.asarray(xs, dtype=float))) for w, xs in reader.events.items()}
    data.event_counts = reader.event_counts
    keyed = [*reader.scalars.values(), *(k for s in reader.stats.values() for k in s.values())]
    data.dropped = reader.dropped + sum(k.dropped for k in keyed)
