"""The sections of the run page, in the order they appear: findings first, then the notes' plots.

Every section renders something when its records are absent: a line saying what is missing
and what would produce it (a user's own loop may log nothing but the loss).
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.image import imread

from babysit.report import plots
from babysit.report._page import Html, Image, Part, note, paragraph, section, table
from babysit.report._run_data import RunData
from babysit.report._series import Series

__all__ = ["SEVERITY_RANK"]

SEVERITY_RANK = {"error": 0, "warning": 1, "info": 2}  # most severe first; unknown last


def _fmt(value: Any, *, limit: int = 400) -> str:
    """A cell: floats to 4 significant digits, dicts as ``k=v, ...``, lists in brackets."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        text = ", ".join(f"{k}={_fmt(v, limit=limit)}" for k, v in value.items())
    elif isinstance(value, list | tuple):
        text = "[" + ", ".join(_fmt(v, limit=limit) for v in value) + "]"
    else:
        text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _image(name: str, fig: Figure, alt: str, caption: str = "") -> Image:
    return Image(name=name, png=plots.to_png(fig), alt=alt, caption=caption)


def _finding_html(finding: dict[str, Any]) -> str:
    severity = str(finding.get("severity", "info"))
    step = finding.get("step")
    where = f" at step {_fmt(step)}" if step is not None else ""
    evidence = finding.get("evidence")
    details = (
        f"<details><summary>evidence</summary><pre>{html.escape(_fmt(evidence))}</pre></details>"
        if evidence
        else ""
    )
    return (
        f'<div class="finding sev-{html.escape(severity)}"><p><span class="badge">'
        f"{html.escape(severity)}</span> <code>{html.escape(str(finding.get('code', '?')))}"
        f"</code>{html.escape(where)}</p><p>{html.escape(str(finding.get('message', '')))}</p>"
        f'<p class="advice"><b>Advice:</b> {html.escape(str(finding.get("advice", "")))}</p>'
        f"{details}</div>"
    )


@section("run", "findings", title="Findings")
def findings_section(run: RunData) -> list[Part]:
    """Diagnoses with advice, most severe first (then by step)."""
    if run.findings is None:
        return [note("No findings.json: this run was not diagnosed (babysit.watch writes it).")]
    if not run.findings:
        return [paragraph("No findings: nothing in the monitored quantities looked wrong.")]

    def order(f: dict[str, Any]) -> tuple[int, float]:
        step = f.get("step")
        at = float(step) if isinstance(step, int | float) else math.inf
        return SEVERITY_RANK.get(str(f.get("severity")), len(SEVERITY_RANK)), at

    ordered = sorted(run.findings, key=order)
    counts = {s: sum(f.get("severity") == s for f in ordered) for s in SEVERITY_RANK}
    head = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    return [paragraph(head), Html("".join(_finding_html(f) for f in ordered))]


def _flatten(table_: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for key, value in table_.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            rows += _flatten(value, f"{name}.")
        else:
            rows.append((name, value))
    return rows


@section("run", "summary", title="Run and config")
def summary_section(run: RunData) -> list[Part]:
    """Key numbers of the run, its events, and the resolved config (every key written out)."""
    facts: list[tuple[str, Any]] = [("run dir", str(run.run_dir))]
    facts += [(f"{kind} records", n) for kind, n in sorted(run.records.items())]
    facts.append(("last step", run.last_step if math.isfinite(run.last_step) else None))
    loss = run.batch.get("loss")
    if loss is not None:
        facts.append(("last minibatch loss", loss.last))
        if run.unit == "epoch" and len(loss):
            facts.append(("epochs (minibatch x)", float(np.nanmax(loss.x))))
        facts.append(("non-finite losses", loss.nonfinite))
    for key, s in run.epochs.items():
        if key.startswith("val_") and np.isfinite(s.mean).any():
            best = np.nanmin(s.lo) if key.endswith("loss") else np.nanmax(s.hi)
            facts.append((f"{key}: last / best", f"{_fmt(s.last)} / {_fmt(float(best))}"))
    facts += [(f"events: {what}", n) for what, n in run.event_counts.items()]
    if run.dropped:
        facts.append(("probe records past the per-probe name cap (not drawn)", run.dropped))
    parts: list[Part] = [table(["quantity", "value"], [(k, _fmt(v)) for k, v in facts])]
    if run.config is None:
        parts.append(note("No config.toml in the run dir: the config summary is not available."))
    else:
        parts += [Html("<h3>Config</h3>"), table(["key", "value"], _flatten(run.config))]
    return parts


@section("run", "loss", title="Loss")
def loss_section(run: RunData) -> list[Part]:
    loss = run.batch.get("loss")
    if loss is None:
        return [note("No minibatch losses: batch records with a loss were not logged.")]
    epoch_losses: dict[str, Series] = {
        k: run.epochs[k] for k in ("train_loss", "val_loss") if k in run.epochs
    }
    events = {w: xs for w, xs in run.events.items() if w != "checkpoint"}
    fig = plots.loss_figure(loss, epoch_losses=epoch_losses, events=events)
    how = (
        f"each point is the mean of {loss.width} consecutive steps, the min-max band shaded"
        if loss.width > 1
        else "one point per logged step"
    )
    caption = f"{loss.total} minibatch losses ({how}); bold: smoothed. x: {loss.unit}."
    return [_image("loss", fig, "minibatch loss, linear and log scale", caption)]


@section("run", "accuracy", title="Train / val accuracy")
def accuracy_section(run: RunData) -> list[Part]:
    metrics = {
        k: s
        for k, s in run.epochs.items()
        if k.startswith(("train_", "val_", "test_")) and not k.endswith("loss")
    }
    if not metrics:
        return [
            note("No per-epoch metrics: epoch records with train_/val_ scores were not logged.")
        ]
    caption = "The gap between train and val accuracy is the amount of overfitting (the notes)."
    return [_image("accuracy", plots.accuracy_figure(metrics), "train/val accuracy", caption)]


@section("run", "schedule", title="Learning rate and momentum")
def schedule_section(run: RunData) -> list[Part]:
    lr, mu = run.batch.get("lr"), run.batch.get("mu")
    if lr is None and mu is None:
        return [note("No lr or mu in the batch records: the loop did not log them.")]
    return [_image("schedule", plots.schedule_figure(lr, mu), "learning rate and momentum")]


def _no_probe(name: str, needs: str = "") -> Html:
    """Why a probe's section is empty: the loop was not watched (or the probe not enabled)."""
    extra = f" {needs}" if needs else ""
    return note(
        f"No {name} probes were logged: they need babysit.watch (babysit train uses it){extra}."
    )


@section("run", "update_ratio", title="Update : weight ratio")
def update_ratio_section(run: RunData) -> list[Part]:
    ratios = {**run.scalars.get("update_ratio", {}), **run.scalars.get("update_ratio_1d", {})}
    if not ratios:
        return [_no_probe("update_ratio")]
    caption = "||update|| / ||w|| per parameter; the notes: want ~1e-3 (band: one decade around)."
    fig = plots.update_ratio_figure(ratios)
    return [_image("update_ratio", fig, "update to weight ratio per parameter", caption)]


@section("run", "activations", title="Activations: dead and saturated units")
def activations_section(run: RunData) -> list[Part]:
    if not run.act_stats:
        return [_no_probe("act_stats")]
    fig = plots.act_stats_figure(run.act_stats)
    return [_image("act_stats", fig, "activation statistics per layer")]


@section("run", "grad_norm", title="Gradient norms")
def grad_norm_section(run: RunData) -> list[Part]:
    norms = run.scalars.get("grad_norm")
    if not norms:
        return [_no_probe("grad_norm")]
    return [_image("grad_norm", plots.grad_norm_figure(norms), "gradient norm per layer")]


def _hist_section(run: RunData, name: str, what: str) -> list[Part]:
    layers = run.hists.get(name)
    if not layers:
        return [_no_probe(name)]
    fig = plots.histogram_figure(layers, what=what, unit=run.unit)
    caption = "Up to 6 snapshots per layer, coloured from early (dark) to late (yellow)."
    return [_image(name, fig, f"{what} histograms per layer", caption)]


@section("run", "act_hist", title="Activation histograms")
def act_hist_section(run: RunData) -> list[Part]:
    return _hist_section(run, "act_hist", "activation")


@section("run", "grad_hist", title="Gradient histograms")
def grad_hist_section(run: RunData) -> list[Part]:
    return _hist_section(run, "grad_hist", "gradient")


@section("run", "filters", title="First-layer filters")
def filters_section(run: RunData) -> list[Part]:
    """The filter grids the monitor saved (first, middle, last), read from the run dir."""
    if not run.filters:
        return [_no_probe("filters", "and a first layer with image-shaped weights")]
    root = run.run_dir.resolve()
    images: list[tuple[str, np.ndarray]] = []
    problems: list[Part] = []
    for x, rel in run.filters:
        path = (root / rel).resolve()
        if not path.is_relative_to(root):
            problems.append(note(f"Filter image {rel} is outside the run dir: not shown."))
            continue
        try:
            images.append((f"{run.unit} {x:.3g}", imread(path)))
        except (OSError, ValueError, SyntaxError) as exc:
            problems.append(note(f"Filter image {rel} could not be read ({exc})."))
    if not images:
        return problems
    caption = "Smooth, clean, diverse filters are a good sign; noisy ones suggest trouble."
    fig = plots.filters_figure(images)
    return [_image("filters", fig, "first-layer filter grid", caption), *problems]


def _records(report: dict[str, Any], key: str) -> list[dict[str, Any]]:
    """The list of row objects under ``key`` (a missing or odd one gives no rows)."""
    rows = report.get(key)
    return [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []


@section("run", "gradcheck", title="Gradient check")
def gradcheck_section(run: RunData) -> list[Part]:
    report = run.gradcheck
    if report is None:
        return [
            note("No gradcheck.json: no gradient check ran with this run (train.gradcheck = true).")
        ]
    params = _records(report, "params")
    cols = ["name", "part", "shape", "checked", "max_rel_error", "kinks", "verdict"]
    if any(p.get("advice") for p in params):
        cols.append("advice")
    rows = [[_fmt(p.get(c)) for c in cols] for p in params]
    verdicts = [str(p.get("verdict", "")) for p in params]
    head = f"passed: {_fmt(report.get('passed'))}; thresholds: {_fmt(report.get('thresholds'))}"
    warnings = report.get("warnings")
    return [
        paragraph(head),
        table(cols, rows, row_class=verdicts),
        *(note(f"warning: {w}") for w in (warnings if isinstance(warnings, list) else [])),
    ]


@section("run", "sanity", title="Sanity checks")
def sanity_section(run: RunData) -> list[Part]:
    report = run.sanity
    if report is None:
        return [note("No sanity.json: no sanity check ran with this run (train.sanity = true).")]
    checks = _records(report, "checks")
    # SanityReport.to_dict() gives each check a verdict (ok | warn | fail); else from passed
    verdicts = [str(c.get("verdict") or ("ok" if c.get("passed") else "fail")) for c in checks]
    cols = ("expected", "observed", "advice")
    rows = [
        [_fmt(c.get("name")), v, *(_fmt(c.get(k)) for k in cols)]
        for c, v in zip(checks, verdicts, strict=True)
    ]
    head = paragraph(f"passed: {_fmt(report.get('passed'))}")
    return [head, table(["check", "verdict", *cols], rows, row_class=verdicts)]


def run_title(run_dir: Path) -> str:
    return f"babysit run: {run_dir.resolve().name}"
