"""The study page's sections, top to bottom: best, trials, scores, stages, curves, pbt,
ensemble.

The notes' hyperparameter search, read back: the best trial and any border warning first
(a best value on the edge of its range means the optimum may lie beyond it: widen the
range on that side), every trial ranked by its validation score, the score against each
hyperparameter on log axes for log ranges with the ranges of every coarse -> fine stage
drawn, the stages' ranges, the top trials' losses on a log scale, and the ensemble built
from the study when there is one. Every section works without scripts.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from babysit.report._page import Html, Part, figure, fmt, get_page, note, paragraph, table
from babysit.report._run_data import json_number
from babysit.report._study_data import StudyData, TrialRow
from babysit.report._study_ensemble import ensemble_parts
from babysit.report._study_pbt import pbt_parts
from babysit.report._study_plots import ParamAxis, curves_figure, score_figure
from babysit.tuning.dimensions import Choice, Range
from babysit.tuning.stages import BORDER

__all__ = ["MAX_PARAMS", "MAX_ROWS", "STUDY", "param_axes", "study_title"]

STUDY = get_page("study")

MAX_ROWS = 500  # trials listed in the table (the best ones); summary.json has them all
MAX_PARAMS = 24  # hyperparameters drawn against the score
MAX_CATEGORIES = 30  # values on a categorical axis
# row classes, in the order rows without a score are listed; "lost": its worker died (re-queued)
STATES = ("complete", "pruned", "diverged", "failed", "lost", "running", "waiting")


def _link(data: StudyData, trial: TrialRow) -> Html | str:
    """A link to the trial's report.html when it has one, else its run dir ("-": none)."""
    if trial.dir is None:
        return "-"
    rel = trial.dir.relative_to(data.dir).as_posix()
    if not (trial.dir / "report.html").is_file():
        return rel
    href = html.escape(quote(f"{rel}/report.html"))
    return Html(f'<a href="{href}">{html.escape(rel)}/report.html</a>')


def _wide(markup: Html) -> Html:
    """A table that scrolls sideways in its section when it has many params."""
    return Html(f'<div class="wide">{markup}</div>')


def _counts(trials: Sequence[TrialRow]) -> str:
    states = [t.state for t in trials]
    parts = [f"{states.count(s)} {s}" for s in dict.fromkeys(sorted(states, key=_state_rank))]
    return f"{len(trials)} trials" + (f": {', '.join(parts)}" if parts else "")


def _state_rank(state: str) -> int:
    return STATES.index(state) if state in STATES else len(STATES)


def _warning_html(data: StudyData, w: dict[str, Any]) -> str:
    param, side, stage = str(w.get("param")), str(w.get("side")), w.get("stage")
    low, high, value = (fmt(json_number(w.get(k))) for k in ("low", "high", "value"))
    where = f", stage {stage}" if stage is not None else ""
    scale = " (in log space)" if _is_log(data, param) else ""
    edge = low if side == "low" else high
    direction = "below" if side == "low" else "above"
    after = ""
    if isinstance(stage, int) and 0 <= stage + 1 < len(data.stages):
        later = data.stages[stage + 1].ranges.get(param)
        after = f" Stage {stage + 1} searched {later}." if later else ""
    return (
        f'<div class="finding sev-warning"><p><span class="badge">border</span> '
        f"<code>{html.escape(param)}</code>: {html.escape(side)} side{html.escape(where)}</p>"
        f"<p>The best value {html.escape(value)} lies in the outer {BORDER:.0%} of the range "
        f"[{html.escape(low)}, {html.escape(high)}]{scale}: better values may lie "
        f'{direction} it.</p><p class="advice"><b>Advice:</b> widen the range on the '
        f"{html.escape(side)} side: move its {html.escape(side)} end {direction} "
        f"{html.escape(edge)}.{html.escape(after)}</p></div>"
    )


def _is_log(data: StudyData, param: str) -> bool:
    return any(isinstance(d, Range) and d.log for s in data.stages for d in [s.dims.get(param)])


@STUDY.section("best", title="Best trial")
def best_section(data: StudyData) -> list[Part]:
    """The best trial (params, score, its run) and every border warning with its advice."""
    head = _counts(data.trials)
    if data.skipped:
        head += f"; {data.skipped} malformed records of summary.json left out"
    parts: list[Part] = [paragraph(head)]
    number_ = data.best_number
    trial = next((t for t in data.trials if t.number == number_), None)
    if trial is None:
        parts.append(note("No trial completed, so there is no best trial: see the trials' errors."))
    else:
        stage = f"stage {trial.stage}, " if trial.stage is not None else ""
        epochs = f"{fmt(trial.epochs)} epochs" if trial.epochs is not None else "its epochs"
        parts.append(
            paragraph(
                f"Trial {trial.number} ({stage}{epochs}): {data.metric} = {fmt(trial.value)}"
                f" ({data.direction} is better), the best complete trial of the latest stage"
                " (the longest trained: its score is the one to compare)."
            )
        )
        parts.append(table(["param", "value"], [(k, fmt(v)) for k, v in trial.params.items()]))
        run = _link(data, trial)
        if isinstance(run, Html):
            parts.append(Html(f"<p>Its run: {run}</p>"))
        elif trial.dir is not None:
            parts.append(note(f"Its run dir: {run}; babysit report {trial.dir} writes its page."))
    if data.warnings:
        parts.append(Html("".join(_warning_html(data, w) for w in data.warnings)))
    else:
        edge = f"the outer {BORDER:.0%} of its range"
        parts.append(paragraph(f"No border warnings: no best value lay in {edge}."))
    return parts


@STUDY.section("trials", title="Trials")
def trials_section(data: StudyData) -> list[Part]:
    """Every trial, best score first; diverged, pruned and failed rows shaded."""
    if not data.trials:
        return [note("No trials in summary.json: the search ran none.")]
    shown = data.trials[:MAX_ROWS]
    best = data.best_number
    errors = any(t.error for t in shown)
    headers = ["#", "stage", "state", data.metric, *data.params, "epochs", "run"]
    headers += ["error"] if errors else []
    rows, classes = [], []
    for t in shown:
        row: list[object] = [t.number, fmt(t.stage), t.state, fmt(t.value)]
        row += [fmt(t.params.get(p), limit=40) for p in data.params]
        row += [fmt(t.epochs), _link(data, t)]
        row += [fmt(t.error, limit=160)] if errors else []
        rows.append(row)
        state = t.state if t.state in STATES else "failed"
        classes.append(state + (" best" if t.number == best else ""))
    order = "highest" if data.direction == "max" else "lowest"
    parts: list[Part] = [
        paragraph(
            f"Ordered by {data.metric}, {order} first; trials without a score last. "
            "Shaded: diverged (red), pruned (grey, at their last score), failed or lost (a worker "
            "died; the trial was queued again); bold: the best."
        ),
        _wide(table(headers, rows, row_class=classes)),
    ]
    if len(data.trials) > MAX_ROWS:
        more = len(data.trials) - MAX_ROWS
        parts.append(note(f"{more} more trials are not listed; summary.json holds them all."))
    return parts


def param_axes(data: StudyData) -> list[ParamAxis]:
    """How each searched param is drawn: log / linear / categorical, ranges and warnings."""
    out = []
    for param in data.params[:MAX_PARAMS]:
        dims = [(s, st.dims[param]) for s, st in enumerate(data.stages) if param in st.dims]
        ranges = [(s, d) for s, d in dims if isinstance(d, Range)]
        choices: dict[str, None] = {}
        for _, d in dims:
            if isinstance(d, Choice):
                choices |= dict.fromkeys(str(c) for c in d.universe)
        values = [t.params[param] for t in data.trials if param in t.params]
        numeric = all(type(v) in (int, float) for v in values)
        if choices or (not ranges and not numeric):
            choices |= dict.fromkeys(str(v) for v in values)
        warned = [w for w in data.warnings if w.get("param") == param]
        warning = None
        if warned:
            sides = ", ".join(f"{w.get('side')} edge (stage {w.get('stage')})" for w in warned)
            warning = f"BORDER WARNING: best on the {sides}; widen the range"
        out.append(
            ParamAxis(
                name=param,
                log=any(d.log for _, d in ranges),
                choices=tuple(list(choices)[:MAX_CATEGORIES]),
                edges=[(s, d.low, d.high) for s, d in ranges],
                warning=warning,
            )
        )
    return out


def _stage_label(s: int, data: StudyData) -> str:
    stage = data.stages[s]
    each = "epoch" if stage.epochs == 1 else "epochs"
    return f"stage {s}: {fmt(stage.trials)} trials, {fmt(stage.epochs)} {each} each"


@STUDY.section("scores", title="Validation score against each hyperparameter")
def scores_section(data: StudyData) -> list[Part]:
    if not data.params or not data.trials:
        return [note("No trials with hyperparameters to draw.")]
    axes = param_axes(data)
    labels = [_stage_label(s, data) for s in range(len(data.stages))]
    best = data.best_number
    fig = score_figure(axes, data.trials, metric=data.metric, best=best, stages=labels)
    caption = (
        "One point per trial, coloured by stage; dashed lines: each stage's range edges. "
        "Log ranges on a log x axis (the notes: search on log scale). Hollow: pruned (last "
        "score); crosses along the bottom: diverged (red) and failed trials; star: the best."
    )
    alt = "validation score against each hyperparameter"
    parts: list[Part] = [figure("scores", fig, alt, caption)]
    if len(data.params) > MAX_PARAMS:
        parts.append(note(f"Only the first {MAX_PARAMS} of {len(data.params)} params are drawn."))
    return parts


@STUDY.section("stages", title="Coarse -> fine stages")
def stages_section(data: StudyData) -> list[Part]:
    """Each stage's budget, how its trials ended, and the range of every param it searched."""
    if not data.stages:
        return [note("No stages in summary.json.")]
    headers = ["stage", "epochs", "trials", "ended"]
    headers += [*data.params, "border warnings"]
    rows = []
    for s, stage in enumerate(data.stages):
        warned = [w for w in data.warnings if w.get("stage") == s]
        row: list[object] = [s, fmt(stage.epochs)]
        row += [fmt(stage.trials), ", ".join(f"{n} {k}" for k, n in stage.counts.items()) or "-"]
        row += [stage.ranges.get(p, "-") for p in data.params]
        row.append(", ".join(f"{w.get('param')} ({w.get('side')})" for w in warned) or "-")
        rows.append(row)
    return [
        paragraph(
            "Each stage after the first narrows every range around the best complete trials "
            "of the stage before (in log space for log ranges, with a margin), or moves an "
            "end past a border the stage before warned about."
        ),
        _wide(table(headers, rows)),
        _dashboard_note(data),
    ]


def _dashboard_note(data: StudyData) -> Html:
    storage = str(data.study.study.get("storage", ""))
    if "@" in storage:  # never show a database password
        scheme, _, rest = storage.partition("://")
        storage = f"{scheme}://***@{rest.rpartition('@')[2]}"
    target = storage.removeprefix("journal://") or "STORAGE"
    return note(f"A plain Optuna study: optuna-dashboard {target} opens it.")


@STUDY.section("curves", title="Top trials' loss curves")
def curves_section(data: StudyData) -> list[Part]:
    parts: list[Part] = [note(f"not read: {n}") for n in data.curve_notes]
    if not data.curves:
        why = "no scored trial has a run dir with metrics.jsonl (a user's objective writes none)"
        return [note(f"No loss curves: {why}."), *parts]
    best = data.best_number
    fig = curves_figure(data.curves, metric=data.metric, best=best)
    caption = (
        f"The {len(data.curves)} best trials (legend: number, stage, {data.metric}); log "
        "scale, where the differences between runs show best (the notes). Scores of "
        "different stages come from different budgets."
    )
    return [figure("curves", fig, "top trials' losses on a log scale", caption), *parts]


@STUDY.section("pbt", title="Population-based training")
def pbt_section(data: StudyData) -> list[Part]:
    """Each PBT trial's lineage: whose weights it took, when, with which values."""
    return pbt_parts(data)


@STUDY.section("ensemble", title="Ensemble")
def ensemble_section(data: StudyData) -> list[Part]:
    """The ensemble of the study's best trials, when ensemble.json is there."""
    return ensemble_parts(data.ensemble, data.ensemble_note, data.dir)


def study_title(data: StudyData) -> str:
    return f"babysit study: {data.name}"


def study_subtitle(data: StudyData) -> str:
    best = "higher" if data.direction == "max" else "lower"
    return (
        f"{data.dir.resolve()} - score: {data.metric} ({best} is better) - open this file "
        "from disk; nothing is fetched."
    )
