"""Read a run dir into bounded summaries: one streamed pass over metrics.jsonl, then the JSONs.

Every per-step quantity becomes a :class:`~babysit.report._series.Series` of at most a few
hundred buckets, histograms and filter images are thinned snapshots, so memory does not grow
with the length of the run. Steps are mapped to epochs with the (step, epoch) pairs the batch
and probe records carry; a loop that logs no epochs is plotted against the iteration.
"""

from __future__ import annotations

import json
import math
import tomllib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from babysit._io import json_restore
from babysit.monitor.log import read_metrics
from babysit.report._page import ReportError
from babysit.report._series import Downsampler, Hist, Keyed, Series, Thinned

__all__ = ["RunData", "load_run"]

BATCH_FIELDS = ("loss", "data_loss", "reg_loss", "lr", "mu")
ACT_STATS = ("mean", "std", "dead", "saturated")
# update_ratio_1d: the monitor's ratios of 1-D parameters (biases, norms), apart from weights
SCALAR_PROBES = ("update_ratio", "update_ratio_1d", "grad_norm")
HIST_PROBES = ("act_hist", "grad_hist")
MAX_EVENTS_PER_KIND = 50


@dataclass
class RunData:
    """What the run page shows; every field may be empty (a user's loop may log only losses)."""

    run_dir: Path
    config: dict[str, Any] | None = None
    findings: list[dict[str, Any]] | None = None  # None: no findings.json
    gradcheck: dict[str, Any] | None = None
    sanity: dict[str, Any] | None = None
    records: Counter[str] = field(default_factory=Counter)  # records per kind
    batch: dict[str, Series] = field(default_factory=dict)  # BATCH_FIELDS present
    epochs: dict[str, Series] = field(default_factory=dict)  # epoch-record keys
    scalars: dict[str, dict[str, Series]] = field(default_factory=dict)  # probe -> name -> s
    act_stats: dict[str, dict[str, Series]] = field(default_factory=dict)  # stat -> layer -> s
    hists: dict[str, dict[str, list[Hist]]] = field(default_factory=dict)  # probe -> layer
    filters: list[tuple[float, str]] = field(default_factory=list)  # (x, relative path)
    events: dict[str, list[float]] = field(default_factory=dict)  # what -> x of first 50
    event_counts: Counter[str] = field(default_factory=Counter)
    dropped: int = 0  # probe records of names past the per-probe cap
    last_step: float = math.nan
    unit: str = "iteration"  # x unit of per-step series: "epoch" when epochs were logged


def _num(value: Any) -> float | None:
    """A JSON number as a float (bool and anything else: None)."""
    return float(value) if type(value) in (float, int) else None  # type(): bool is no number


class _Reader:
    """The single streamed pass: one handler per record kind, one per probe name."""

    def __init__(self) -> None:
        self.kinds: Counter[str] = Counter()
        self.batch = {f: Downsampler(1024) for f in BATCH_FIELDS}
        self.clock = Downsampler(1024)  # (step, epoch) pairs: maps steps to epochs
        self.epochs_by_step = Keyed(max_keys=32, buckets=512)
        self.epochs_by_epoch = Keyed(max_keys=32, buckets=512)
        self.scalars = {name: Keyed() for name in SCALAR_PROBES}
        self.act = {stat: Keyed() for stat in ACT_STATS}
        self.hists: dict[str, dict[str, Thinned[Hist]]] = {name: {} for name in HIST_PROBES}
        self.filters: Thinned[tuple[float, str]] = Thinned(2)
        self.events: dict[str, list[float]] = {}
        self.event_counts: Counter[str] = Counter()
        self.dropped = 0
        self.last_step = -math.inf
        self.handlers: dict[str, Callable[[dict[str, Any]], None]] = {
            "batch": self.on_batch,
            "epoch": self.on_epoch,
            "probe": self.on_probe,
            "event": self.on_event,
        }
        self.probes: dict[str, Callable[[float, Any], None]] = {
            **{name: self._scalar_probe(name) for name in SCALAR_PROBES},
            **{name: self._hist_probe(name) for name in HIST_PROBES},
            "act_stats": self.on_act_stats,
            "filters": self.on_filters,
        }

    def read(self, path: Path) -> None:
        for record in read_metrics(path):
            kind = record.get("kind")
            handler = self.handlers.get(kind) if isinstance(kind, str) else None
            if handler is not None:
                self.kinds[str(kind)] += 1
                handler(record)

    def _step(self, record: dict[str, Any]) -> float | None:
        step = _num(record.get("step"))
        if step is not None:
            self.last_step = max(self.last_step, step)
            epoch = _num(record.get("epoch"))
            if epoch is not None and record.get("kind") != "epoch":
                self.clock.add(step, epoch)
        return step

    def on_batch(self, record: dict[str, Any]) -> None:
        step = self._step(record)
        if step is None:
            return
        for name, stream in self.batch.items():
            value = record.get(name)
            if isinstance(value, float | int) and value is not True and value is not False:
                stream.add(step, value)  # a number, not a bool or a null

    def on_epoch(self, record: dict[str, Any]) -> None:
        step, epoch = self._step(record), _num(record.get("epoch"))
        target, x = (
            (self.epochs_by_step, step) if step is not None else (self.epochs_by_epoch, epoch)
        )
        if x is None:
            return
        for key, value in record.items():
            y = _num(value)
            if key not in ("kind", "epoch", "step") and y is not None:
                target.add(key, x, y)

    def on_probe(self, record: dict[str, Any]) -> None:
        step, handler = self._step(record), self.probes.get(str(record.get("name")))
        values = record.get("values")
        if step is not None and handler is not None and isinstance(values, dict):
            handler(step, values)

    def _scalar_probe(self, name: str) -> Callable[[float, Any], None]:
        def handle(step: float, values: dict[str, Any]) -> None:
            for key, value in values.items():
                y = _num(value)
                if y is not None:
                    self.scalars[name].add(key, step, y)

        return handle

    def _hist_probe(self, name: str) -> Callable[[float, Any], None]:
        def handle(step: float, values: dict[str, Any]) -> None:
            layers = self.hists[name]
            for layer, hist in values.items():
                if not isinstance(hist, dict):
                    continue
                edges = np.asarray(hist.get("edges", []), dtype=np.float64).reshape(-1)
                counts = np.asarray(hist.get("counts", []), dtype=np.float64).reshape(-1)
                if counts.size == 0 or edges.size != counts.size + 1:
                    continue  # malformed snapshot: nothing to draw
                if layer not in layers:
                    if len(layers) >= 64:
                        self.dropped += 1
                        continue
                    layers[layer] = Thinned(24)
                layers[layer].add(Hist(step, edges, counts))

        return handle

    def on_act_stats(self, step: float, values: dict[str, Any]) -> None:
        for layer, stats in values.items():
            if isinstance(stats, dict):
                for stat, stream in self.act.items():
                    y = _num(stats.get(stat))
                    if y is not None:
                        stream.add(layer, step, y)

    def on_filters(self, step: float, values: dict[str, Any]) -> None:
        path = values.get("path")
        if isinstance(path, str):
            self.filters.add((step, path))

    def on_event(self, record: dict[str, Any]) -> None:
        step, what = self._step(record), str(record.get("what", "event"))
        if what not in self.event_counts and len(self.event_counts) >= 32:
            return
        self.event_counts[what] += 1
        xs = self.events.setdefault(what, [])
        if step is not None and len(xs) < MAX_EVENTS_PER_KIND:
            xs.append(step)


def _read_json(path: Path, expect: type, what: str) -> Any:
    if not path.is_file():
        return None
    try:
        value = json_restore(json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ReportError(
            f"{path}: not valid JSON ({exc}); rewrite it or delete it to leave it out"
        ) from exc
    if not isinstance(value, expect):
        raise ReportError(f"{path}: expected {what}, got {type(value).__name__}")
    return value


def load_run(run_dir: str | Path) -> RunData:
    """Read ``run_dir`` (metrics.jsonl required; config.toml and the JSONs optional)."""
    root = Path(run_dir)
    if not root.is_dir():
        raise ReportError(f"{root}: not a directory; pass the run dir that holds metrics.jsonl")
    metrics = root / "metrics.jsonl"
    if not metrics.is_file():
        raise ReportError(
            f"{root}: no metrics.jsonl; is this a run dir (written by babysit train or watch)?"
        )
    data = RunData(run_dir=root)
    config = root / "config.toml"
    if config.is_file():
        try:
            data.config = tomllib.loads(config.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ReportError(f"{config}: not valid TOML ({exc}); fix or delete it") from exc
    data.findings = _read_json(root / "findings.json", list, "a list of findings")
    if data.findings is not None and not all(isinstance(f, dict) for f in data.findings):
        raise ReportError(f"{root / 'findings.json'}: every finding must be a JSON object")
    data.gradcheck = _read_json(root / "gradcheck.json", dict, "GradcheckReport.to_dict()")
    data.sanity = _read_json(root / "sanity.json", dict, "SanityReport.to_dict()")
    reader = _Reader()
    reader.read(metrics)
    _finish(data, reader)
    return data


def _finish(data: RunData, reader: _Reader) -> None:
    """Turn the reader's streams into series, with steps mapped to epochs where known."""
    clock = reader.clock.series()
    order = np.argsort(clock.x, kind="stable")
    known = np.isfinite(clock.mean[order])
    steps, epochs = clock.x[order][known], clock.mean[order][known]
    unit = "epoch" if steps.size else "iteration"

    def to_x(x: np.ndarray) -> np.ndarray:
        return np.interp(x, steps, epochs) if steps.size else x

    def mapped(series: Series) -> Series:
        return series.with_x(to_x, unit)

    data.unit = unit
    data.records = reader.kinds
    data.last_step = reader.last_step if math.isfinite(reader.last_step) else math.nan
    data.batch = {k: mapped(s.series()) for k, s in reader.batch.items() if s.total}
    data.epochs = {k: mapped(s) for k, s in reader.epochs_by_step.series().items()}
    for key, s in reader.epochs_by_epoch.series("epoch").items():
        data.epochs.setdefault(key, s)
    data.scalars = {
        name: {k: mapped(s) for k, s in keyed.series().items()}
        for name, keyed in reader.scalars.items()
        if keyed.streams
    }
    data.act_stats = {
        stat: {k: mapped(s) for k, s in keyed.series().items()}
        for stat, keyed in reader.act.items()
        if keyed.streams
    }
    data.hists = {
        name: {
            layer: [Hist(float(to_x(np.array([h.x]))[0]), h.edges, h.counts) for h in th.items()]
            for layer, th in layers.items()
        }
        for name, layers in reader.hists.items()
        if layers
    }
    data.filters = [(float(to_x(np.array([s]))[0]), p) for s, p in reader.filters.items()]
    data.events = {w: list(to_x(np.asarray(xs, dtype=float))) for w, xs in reader.events.items()}
    data.event_counts = reader.event_counts
    data.dropped = reader.dropped + sum(k.dropped for k in reader.scalars.values())
    data.dropped += sum(k.dropped for k in reader.act.values())
