"""The sections of the run page, in the order they appear: findings first, then the notes' plots.

Every section renders something when its records are absent: a line saying what is missing
and what would produce it (a user's own loop may log nothing but the loss). The probes'
sections are not written here: one per registered probe (``monitor.probes.PROBES``, probes
sharing a ``section`` together), drawn by the kind of values the probe declares.
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

import numpy as np

from babysit.monitor import log
from babysit.monitor.diagnose import SEVERITIES
from babysit.monitor.log import SETUP_EVENTS
from babysit.report import plots
from babysit.report._page import Html, Part, figure, fmt, get_page, note, paragraph, table
from babysit.report._probe_sections import probe_sections
from babysit.report._run_data import RunData
from babysit.report._series import Series

__all__ = ["RUN", "SEVERITY_RANK", "gradcheck_parts", "run_title", "sanity_parts"]

RUN = get_page("run")

# most severe first (error, warning, info); unknown severities last
SEVERITY_RANK = {severity: rank for rank, severity in enumerate(reversed(SEVERITIES))}


def _finding_html(finding: dict[str, Any]) -> str:
    severity = str(finding.get("severity", "info"))
    step = finding.get("step")
    where = f" at step {fmt(step)}" if step is not None else ""
    evidence = finding.get("evidence")
    details = (
        f"<details><summary>evidence</summary><pre>{html.escape(fmt(evidence))}</pre></details>"
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


def _skipped_notes(run: RunData) -> list[Part]:
    """What of the run dir was left out as unusable (the page is drawn without it), and why."""
    return [note(f"Left out of this page: {name}: {why}.") for name, why in run.skipped.items()]


@RUN.section("findings", title="Findings")
def findings_section(run: RunData) -> list[Part]:
    """Diagnoses with advice in findings.json's order (the monitor ranks them by cause: the
    first is the one to act on); first, what was left out."""
    skipped = _skipped_notes(run)
    if run.findings is None:
        if "findings.json" in run.skipped:
            return skipped
        return [
            *skipped,
            note("No findings.json: this run was not diagnosed (babysit.watch writes it)."),
        ]
    if not run.findings:
        return [
            *skipped,
            paragraph("No findings: nothing in the monitored quantities looked wrong."),
        ]

    ordered = run.findings  # findings.json's order: ranked by cause, the one to act on first
    counts = {s: sum(f.get("severity") == s for f in ordered) for s in SEVERITY_RANK}
    head = (
        ", ".join(f"{n} {s}" for s, n in counts.items() if n) + "; the first is the one to act on"
    )
    return [*skipped, paragraph(head), Html("".join(_finding_html(f) for f in ordered))]


def _flatten(table_: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for key, value in table_.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            rows += _flatten(value, f"{name}.")
        else:
            rows.append((name, value))
    return rows


@RUN.section("summary", title="Run and config")
def summary_section(run: RunData) -> list[Part]:
    """Key numbers of the run, its events, and the resolved config (every key written out)."""
    facts: list[tuple[str, Any]] = [("run dir", str(run.run_dir))]
    facts += [(f"{kind} records", n) for kind, n in sorted(run.records.items())]
    facts.append(("last step", run.last_step if math.isfinite(run.last_step) else None))
    loss = run.batch.get("loss")
    if loss is not None:
        facts.append((f"last {plots.LOSS_LABELS['loss']}", loss.last))
        if run.unit == "epoch" and len(loss):
            facts.append(("epochs (minibatch x)", float(np.nanmax(loss.x))))
        facts.append(("non-finite losses", loss.nonfinite))
    for key, s in run.epochs.items():
        if key.startswith("val_") and np.isfinite(s.mean).any():
            best = np.nanmin(s.lo) if key.endswith("loss") else np.nanmax(s.hi)
            facts.append((f"{key}: last / best", f"{fmt(s.last)} / {fmt(float(best))}"))
    facts += [(f"events: {what}", n) for what, n in run.event_counts.items()]
    if run.dropped:
        facts.append(("probe records past the per-probe name cap (not drawn)", run.dropped))
    parts: list[Part] = [table(["quantity", "value"], [(k, fmt(v)) for k, v in facts])]
    if run.config is None:
        parts.append(note("No config.toml in the run dir: the config summary is not available."))
    else:
        parts += [Html("<h3>Config</h3>"), table(["key", "value"], _flatten(run.config))]
    return parts


@RUN.section("loss", title="Loss")
def loss_section(run: RunData) -> list[Part]:
    """The minibatch losses against the epoch losses, compared like with like.

    The epoch losses hold no regularisation (train_loss: the epoch's minibatch data losses
    averaged), so the smoothed line is the minibatch data loss when it was logged; the
    minimised total (data + reg) is drawn beside it while the regularisation is not zero.
    """
    loss, data_loss, reg = (run.batch.get(k) for k in ("loss", "data_loss", "reg_loss"))
    if loss is None and data_loss is None:
        return [note("No minibatch losses: batch records with a loss were not logged.")]
    minibatch = {k: s for k, s in (("data_loss", data_loss), ("loss", loss)) if s is not None}
    if data_loss is not None and reg is not None and not np.any(reg.hi[reg.count > 0] != 0):
        minibatch.pop("loss", None)  # no regularisation: the total is the data loss
    epoch_losses: dict[str, Series] = {
        k: run.epochs[k] for k in ("train_loss", "val_loss") if k in run.epochs
    }
    # training events only: not checkpoints, not the monitor's notes on the setup
    events = {w: xs for w, xs in run.events.items() if w not in ("checkpoint", *SETUP_EVENTS)}
    fig = plots.loss_figure(minibatch, epoch_losses=epoch_losses, events=events)
    main = next(iter(minibatch.values()))
    how = (
        f"each point is the mean of {main.width} consecutive steps, the min-max band shaded"
        if main.width > 1
        else "one point per logged step"
    )
    caption = (
        f"{main.total} minibatches ({how}); bold: smoothed. The epoch losses are data losses"
        f" (no regularisation). x: {main.unit}."
    )
    return [figure("loss", fig, "minibatch and epoch losses, linear and log scale", caption)]


@RUN.section("accuracy", title="Train / val accuracy")
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
    return [figure("accuracy", plots.accuracy_figure(metrics), "train/val accuracy", caption)]


def _best(s: Series, lower: bool) -> tuple[float, float]:
    """(best value, its x) of a per-epoch series; lower is better for a loss."""
    values = np.where(np.isfinite(s.mean), s.mean, np.inf if lower else -np.inf)
    i = int(np.argmin(values) if lower else np.argmax(values))
    return float(s.mean[i]), float(s.x[i])


@RUN.section("averaged", title="Averaged weights (EMA / SWA)")
def averaged_section(run: RunData) -> list[Part]:
    """The averaged weights' validation curves beside the raw ones; best and last compared."""
    kind = next((k for k in log.AVERAGE_KINDS if f"{k}_val_loss" in run.epochs), "ema")
    pairs = {
        key: (s, run.epochs[f"{kind}_{key}"])
        for key, s in run.epochs.items()
        if key.startswith("val_") and f"{kind}_{key}" in run.epochs
    }
    if not pairs:
        return [note("No averaged weights: train.ema (e.g. 0.999) or train.swa keeps them.")]
    rows, lines = [], {}
    for key, (raw, avg) in pairs.items():
        (rb, rx), (ab, ax) = _best(raw, key.endswith("loss")), _best(avg, key.endswith("loss"))
        best_raw, best_avg = (
            f"{fmt(rb)} ({raw.unit} {fmt(rx)})",
            f"{fmt(ab)} ({avg.unit} {fmt(ax)})",
        )
        rows.append((key, best_raw, best_avg, f"{ab - rb:+.4g}", fmt(raw.last), fmt(avg.last)))
        lines[key] = f"Best {key}: {kind} {best_avg} vs raw {best_raw}, {ab - rb:+.4g}"
    cols = ["quantity", "best raw", f"best {kind}", f"{kind} - raw", "last raw", f"last {kind}"]
    caption = (
        f"{kind}: the running average of the weights (train.{kind}), evaluated on the "
        f"validation split every epoch; its checkpoints are in checkpoints/{kind}/."
    )
    fig = plots.averaged_figure(pairs, kind)
    head = paragraph(lines[next((k for k in lines if k != "val_loss"), "val_loss")])
    figure_ = figure("averaged", fig, f"raw vs {kind} validation", caption)
    return [head, table(cols, rows), figure_]


@RUN.section("schedule", title="Learning rate and momentum")
def schedule_section(run: RunData) -> list[Part]:
    lr, mu = run.batch.get("lr"), run.batch.get("mu")
    if lr is None and mu is None:
        return [note("No lr or mu in the batch records: the loop did not log them.")]
    return [figure("schedule", plots.schedule_figure(lr, mu), "learning rate and momentum")]


RUN.sections_from("probes")(probe_sections)  # one section per registered probe, here


def _records(report: dict[str, Any], key: str) -> list[dict[str, Any]]:
    """The list of row objects under ``key`` (a missing or odd one gives no rows)."""
    rows = report.get(key)
    return [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []


@RUN.section("gradcheck", title="Gradient check")
def gradcheck_section(run: RunData) -> list[Part]:
    return gradcheck_parts(run.gradcheck)


def gradcheck_parts(report: dict[str, Any] | None) -> list[Part]:
    """gradcheck.json as a table, a row per parameter tensor (also on the demo page)."""
    if report is None:
        return [
            note("No gradcheck.json: no gradient check ran with this run (train.gradcheck = true).")
        ]
    params = _records(report, "params")
    cols = ["name", "part", "shape", "checked", "max_rel_error", "kinks", "verdict"]
    if any(p.get("advice") for p in params):
        cols.append("advice")
    rows = [[fmt(p.get(c)) for c in cols] for p in params]
    verdicts = [str(p.get("verdict", "")) for p in params]
    head = f"passed: {fmt(report.get('passed'))}; thresholds: {fmt(report.get('thresholds'))}"
    warnings = report.get("warnings")
    return [
        paragraph(head),
        table(cols, rows, row_class=verdicts),
        *(note(f"warning: {w}") for w in (warnings if isinstance(warnings, list) else [])),
    ]


@RUN.section("sanity", title="Sanity checks")
def sanity_section(run: RunData) -> list[Part]:
    return sanity_parts(run.sanity)


def sanity_parts(report: dict[str, Any] | None) -> list[Part]:
    """sanity.json as a table, a row per check (also on the demo page)."""
    if report is None:
        return [note("No sanity.json: no sanity check ran with this run (train.sanity = true).")]
    checks = _records(report, "checks")
    # SanityReport.to_dict() gives each check a verdict (ok | warn | fail); else from passed
    verdicts = [str(c.get("verdict") or ("ok" if c.get("passed") else "fail")) for c in checks]
    cols = ("expected", "observed", "advice")
    rows = [
        [fmt(c.get("name")), v, *(fmt(c.get(k)) for k in cols)]
        for c, v in zip(checks, verdicts, strict=True)
    ]
    head = paragraph(f"passed: {fmt(report.get('passed'))}")
    return [head, table(["check", "verdict", *cols], rows, row_class=verdicts)]


def run_title(run_dir: Path) -> str:
    return f"babysit run: {run_dir.resolve().name}"
