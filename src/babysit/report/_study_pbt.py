"""The study page's population-based training: each trial's lineage, read and drawn.

A trial of a ``mode = "pbt"`` stage has, in summary.json, ``pbt_lineage`` (its exploit
events: ``epoch``, ``source_trial`` whose weights it took, its explored values ``before``
and ``after``, the keys ``resampled``, its and the source's scores, ``diverged``) and
``final_params``. Shown: how many exploits each stage made, the best trial's ancestry
(whose weights its weights are, back to the trial they started in), each trial's
explored values over the epochs (steps at its exploits), and the events in a table.
Records are untrusted: a malformed event is left out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from matplotlib.figure import Figure

from babysit.report import plots
from babysit.report._page import Part, figure, fmt, note, paragraph, table
from babysit.report._run_data import json_number
from babysit.report._study_data import StudyData

__all__ = ["MAX_EVENTS", "MAX_KEYS", "Event", "PbtTrial", "ancestry", "pbt_parts", "pbt_trials"]

MAX_EVENTS = 200  # exploit events listed (summary.json holds them all)
MAX_KEYS = 4  # explored hyperparameters drawn


@dataclass(frozen=True)
class Event:
    """One exploit of a trial: at the end of ``epoch`` it took ``source``'s weights."""

    epoch: int
    source: int | None
    before: dict[str, float]
    after: dict[str, float]
    resampled: tuple[str, ...]
    score: float | None
    source_score: float | None
    diverged: bool


@dataclass(frozen=True)
class PbtTrial:
    number: int
    stage: int | None
    params: dict[str, Any]  # as it started
    final: dict[str, float]
    events: list[Event]
    value: float | None


def _numbers(value: Any) -> dict[str, float]:
    if not isinstance(value, dict):
        return {}
    out = {str(k): json_number(v) for k, v in value.items()}
    return {k: v for k, v in out.items() if v is not None}


def _event(record: Any) -> Event | None:
    if not isinstance(record, dict) or type(record.get("epoch")) is not int:
        return None
    source = record.get("source_trial")
    drawn = record.get("resampled")
    return Event(
        epoch=record["epoch"],
        source=source if type(source) is int else None,
        before=_numbers(record.get("before")),
        after=_numbers(record.get("after")),
        resampled=tuple(str(k) for k in drawn) if isinstance(drawn, list) else (),
        score=json_number(record.get("score")),
        source_score=json_number(record.get("source_score")),
        diverged=record.get("diverged") is True,
    )


def pbt_trials(data: StudyData) -> list[PbtTrial]:
    """The trials of summary.json that trained with PBT (they have a lineage), by number."""
    out = []
    for record in data.study.trials:
        if not isinstance(record, dict) or type(record.get("number")) is not int:
            continue
        lineage = record.get("pbt_lineage")
        if not isinstance(lineage, list):
            continue
        events = [e for r in lineage if (e := _event(r)) is not None]
        params = record.get("params")
        stage = record.get("stage")
        out.append(
            PbtTrial(
                number=record["number"],
                stage=stage if type(stage) is int else None,
                params=dict(params) if isinstance(params, dict) else {},
                final=_numbers(record.get("final_params")),
                events=sorted(events, key=lambda e: e.epoch),
                value=json_number(record.get("value")),
            )
        )
    return sorted(out, key=lambda t: t.number)


def ancestry(number: int, trials: Mapping[int, PbtTrial]) -> list[tuple[int, int | None]]:
    """Whose weights trial ``number``'s are: [(trial, the epoch it took them from the next)],
    newest first, ending with (the trial whose initial weights they grew from, None)."""
    chain: list[tuple[int, int | None]] = []
    epoch: float = math.inf
    while True:
        trial = trials.get(number)
        seen = any(n == number for n, _ in chain)
        earlier = [] if trial is None or seen else trial.events
        earlier = [e for e in earlier if e.epoch < epoch and e.source is not None]
        if not earlier:
            chain.append((number, None))
            return chain
        last = earlier[-1]
        chain.append((number, last.epoch))
        assert last.source is not None
        number, epoch = last.source, last.epoch


def _path(trial: PbtTrial, key: str, epochs: float) -> tuple[list[float], list[float]]:
    """(epochs, values): the trial's value of ``key`` from epoch 0, stepping at exploits."""
    start = json_number(trial.params.get(key))
    if start is None:
        return [], []
    xs, ys = [0.0], [start]
    for e in trial.events:
        if key in e.after:
            xs.append(float(e.epoch))
            ys.append(e.after[key])
    xs.append(max(float(epochs), xs[-1]))
    ys.append(ys[-1])
    return xs, ys


def lineage_figure(
    trials: Sequence[PbtTrial], keys: Sequence[str], *, epochs: float, best: int | None
) -> Figure:
    """One panel per explored key: each trial's value over the epochs (log scale when
    every value is positive), a dot at each exploit, the best trial drawn thick."""
    fig, axes = plots.new_figure(1, len(keys), height=3.6)
    for ax, key in zip(axes, keys, strict=True):
        positive = True
        for t in trials:
            xs, ys = _path(t, key, epochs)
            if not xs:
                continue
            positive = positive and min(ys) > 0
            bold = t.number == best
            color = "k" if bold else f"C{t.number % 10}"
            ax.plot(
                xs,
                ys,
                drawstyle="steps-post",
                color=color,
                lw=2.4 if bold else 0.9,
                alpha=1.0 if bold else 0.6,
                zorder=3 if bold else 2,
                label=f"#{t.number} (best)" if bold else None,
            )
            ax.scatter(xs[1:-1], ys[1:-1], s=12, color=color, zorder=4)
        if positive and ax.get_lines():
            ax.set_yscale("log")
        ax.set_title(f"{key} (log scale)" if positive else key, fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3, which="both")
        if best is not None and any(t.number == best for t in trials):
            ax.legend(fontsize=8, loc="best")
    return fig


def _change(e: Event, key: str) -> str:
    mark = "*" if key in e.resampled else ""
    return f"{fmt(e.before.get(key))} -> {fmt(e.after.get(key))}{mark}"


def pbt_parts(data: StudyData) -> list[Part]:
    """The section: counts, the best trial's ancestry, the values figure, the events."""
    trials = pbt_trials(data)
    if not trials:
        return [
            note(
                'No population-based training: a [[search.stage]] with mode = "pbt" '
                "records each trial's lineage here."
            )
        ]
    by_number = {t.number: t for t in trials}
    events = sorted(
        ((e, t) for t in trials for e in t.events), key=lambda p: (p[0].epoch, p[1].number)
    )
    keys = list(dict.fromkeys(k for t in trials for k in t.final))[:MAX_KEYS]
    parts: list[Part] = [
        paragraph(
            f"{len(trials)} trials trained as populations with exploitation: {len(events)} "
            "exploit steps, each replacing a trial's weights, optimizer state and "
            "hyperparameters with a copy of a better trial's, then perturbing the copied "
            "hyperparameters (x0.8 / x1.2, or resampled from the range: marked *)."
        )
    ]
    best = data.best_number
    if best in by_number:
        chain = ancestry(best, by_number)
        text = " <- ".join(
            f"trial {n}" + (f" (its weights since epoch {e})" if e is not None else "")
            for n, e in chain
        )
        final = by_number[best].final
        parts.append(
            paragraph(f"The best trial's weights: {text}. Its final values: {fmt(final)}.")
        )
    stages = [t.stage for t in trials if t.stage is not None and t.stage < len(data.stages)]
    epochs = max((data.stages[s].epochs or 0.0 for s in stages), default=0.0)
    epochs = max([epochs, *(e.epoch for e, _ in events)])
    if keys:
        fig = lineage_figure(trials, keys, epochs=epochs, best=best)
        caption = (
            "Each trial's explored hyperparameters over the epochs: a step where an exploit "
            "gave it another trial's weights and perturbed values (dots); black: the best."
        )
        parts.append(figure("pbt", fig, "each trial's hyperparameters over the epochs", caption))
    headers = ["epoch", "trial", "took the weights of", "its score", "theirs", *keys]
    rows = []
    for e, t in events[:MAX_EVENTS]:
        score = "diverged" if e.diverged else fmt(e.score)
        rows.append(
            [e.epoch, t.number, fmt(e.source), score, fmt(e.source_score)]
            + [_change(e, k) for k in keys]
        )
    parts.append(table(headers, rows))
    if len(events) > MAX_EVENTS:
        parts.append(note(f"{len(events) - MAX_EVENTS} more events are in summary.json."))
    return parts
