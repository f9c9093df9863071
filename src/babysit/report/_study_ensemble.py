"""An ensemble's ``ensemble.json`` read (untrusted) and drawn: the study page's section,
and the parts the ensemble page (``_ensemble_page``) is made of.

``babysit ensemble --from-study DIR --top K`` writes ``DIR/ensemble.json`` (any ensemble
dir holds one; ``babysit.ensembles.result`` documents it): ``{members: [{path, val_acc,
test_acc}], ensemble: {val_acc, test_acc, val_loss, test_loss}}`` (DESIGN.md), and
optionally ``by_size: [{size, val_acc, test_acc}]`` (the ensemble's accuracy as members
are added), ``mean_member``, ``gain``, ``average``, ``distill`` and ``notes``. On the
study page a file that does not parse or has another shape gives the section a note, not
an error: the rest of the page stands.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from babysit._io import read_json_file
from babysit.report import plots
from babysit.report._page import Html, Part, figure, fmt, note, paragraph, table
from babysit.report._run_data import json_number

__all__ = [
    "ENSEMBLE_BY_SIZE",
    "ENSEMBLE_FILE",
    "EnsembleData",
    "distill_parts",
    "ensemble_figure",
    "ensemble_parts",
    "member_parts",
    "read_ensemble",
    "score_parts",
    "size_parts",
]

ENSEMBLE_FILE = "ensemble.json"
ENSEMBLE_BY_SIZE = "by_size"  # optional: [{size, val_acc, test_acc}]
ACCURACIES = ("val_acc", "test_acc")
SCORES = ("val_acc", "test_acc", "val_loss", "test_loss")
MAX_MEMBERS = 100  # members listed
STUDENTS = {"distilled": "distilled student", "labels": "student on labels only"}


@dataclass(frozen=True)
class EnsembleData:
    scores: dict[str, float]  # the ensemble's finite numbers: val_acc, test_acc, ...
    members: list[Mapping[str, Any]]
    by_size: list[dict[str, float]]  # {size, val_acc?, test_acc?} by size
    mean_member: dict[str, float] = field(default_factory=dict)
    gain: dict[str, float] = field(default_factory=dict)
    average: str | None = None
    distill: Mapping[str, Any] | None = None
    notes: list[str] = field(default_factory=list)


def _finite(value: Any) -> float | None:
    x = json_number(value)
    return x if x is not None and math.isfinite(x) else None


def _objects(value: Any) -> list[Mapping[str, Any]]:
    return [r for r in value if isinstance(r, dict)] if isinstance(value, list) else []


def _by_size(value: Any) -> list[dict[str, float]]:
    rows = []
    for r in _objects(value):
        size = _finite(r.get("size"))
        if size is not None:
            accs = {k: x for k in ACCURACIES if (x := _finite(r.get(k))) is not None}
            rows.append({"size": size, **accs})
    return sorted(rows, key=lambda r: r["size"])


def read_ensemble(path: Path) -> tuple[EnsembleData | None, str | None]:
    """(the ensemble, None), or (None, why it is not shown); (None, None): no file."""
    if not path.is_file():
        return None, None
    try:
        value = read_json_file(path)  # untrusted: size and depth capped
    except (OSError, ValueError, RecursionError) as exc:
        return None, f"{path}: not valid JSON ({exc}); rewrite it or delete it"
    ok = (
        isinstance(value, dict)
        and isinstance(value.get("members", []), list)
        and isinstance(value.get("ensemble", {}), dict)
        and isinstance(value.get(ENSEMBLE_BY_SIZE, []), list)
    )
    if not ok:
        shape = f"{{members: [...], ensemble: {{...}}, {ENSEMBLE_BY_SIZE}: [...]}}"
        return None, f"{path}: expected {shape}"
    distill = value.get("distill")
    notes = value.get("notes")
    return EnsembleData(
        scores=_numbers(value.get("ensemble")),
        members=_objects(value.get("members")),
        by_size=_by_size(value.get(ENSEMBLE_BY_SIZE)),
        mean_member=_numbers(value.get("mean_member")),
        gain=_numbers(value.get("gain")),
        average=str(value["average"]) if isinstance(value.get("average"), str) else None,
        distill=distill if isinstance(distill, dict) else None,
        notes=[str(n) for n in notes if isinstance(n, str)] if isinstance(notes, list) else [],
    ), None


def _numbers(value: Any) -> dict[str, float]:
    """The finite numbers of a JSON object (anything else: empty)."""
    if not isinstance(value, dict):
        return {}
    return {str(k): x for k, v in value.items() if (x := _finite(v)) is not None}


def _best_member(members: Sequence[Mapping[str, Any]]) -> dict[str, float] | None:
    """The accuracies of the member with the best val_acc (None: no member has one)."""
    scored = [(x, m) for m in members if (x := _finite(m.get("val_acc"))) is not None]
    if not scored:
        return None
    top = max(scored, key=lambda p: p[0])[1]
    return {k: x for k in ACCURACIES if (x := _finite(top.get(k))) is not None}


def ensemble_figure(
    by_size: Sequence[Mapping[str, float]], *, single: Mapping[str, float] | None
) -> Figure:
    """Ensemble accuracy against its size; ``single``: the best member's, dotted, to beat."""
    fig, (ax,) = plots.new_figure(height=3.4)
    sizes = [row["size"] for row in by_size]
    for key, color in zip(ACCURACIES, ("C0", "C1"), strict=True):
        ys = [row.get(key, math.nan) for row in by_size]
        if any(math.isfinite(y) for y in ys):
            ax.plot(sizes, ys, "o-", color=color, lw=1.5, label=f"ensemble {key}")
        if single is not None and key in single:
            ax.axhline(single[key], color=color, ls=":", lw=1.2, label=f"best member {key}")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # sizes are whole members
    ax.set_xlabel("ensemble size (members)")
    ax.set_ylabel("accuracy")
    ax.set_title("accuracy against ensemble size")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return fig


def _cells(row: Mapping[str, Any], keys: Sequence[str]) -> list[str]:
    return [fmt(_finite(row.get(k))) for k in keys]


def score_parts(ensemble: EnsembleData) -> list[Part]:
    """The ensemble's scores beside the mean member's and the gain (ensemble - mean)."""
    rows = [
        [
            "ensemble" + (f" ({ensemble.average})" if ensemble.average else ""),
            *_cells(ensemble.scores, SCORES),
        ]
    ]
    if ensemble.mean_member:
        rows.append(["mean member", *_cells(ensemble.mean_member, SCORES)])
    if ensemble.gain:
        rows.append(
            [
                "gain over the mean member",
                *(f"{x:+.4g}" if (x := ensemble.gain.get(k)) is not None else "-" for k in SCORES),
            ]
        )
    if not ensemble.scores:
        return [note("No scores.")]
    return [table(["", *SCORES], rows), *(note(n) for n in ensemble.notes)]


def member_parts(ensemble: EnsembleData) -> list[Part]:
    """The members table: each checkpoint, where it came from, its scores alone."""
    keys = [k for k in ("source", *SCORES) if any(k in m for m in ensemble.members)]
    rows = [
        [
            fmt(m.get("path"), limit=80),
            *(fmt(m.get(k)) if k == "source" else fmt(_finite(m.get(k))) for k in keys),
        ]
        for m in ensemble.members[:MAX_MEMBERS]
    ]
    more = len(ensemble.members) - MAX_MEMBERS
    extra = [note(f"{more} more members in {ENSEMBLE_FILE}")] if more > 0 else []
    return [table(["path", *keys], rows), *extra]


def size_parts(ensemble: EnsembleData) -> list[Part]:
    """Accuracy against the number of members (the notes: better, with diminishing returns)."""
    if not ensemble.by_size:
        return [note(f"No {ENSEMBLE_BY_SIZE} in {ENSEMBLE_FILE}.")]
    fig = ensemble_figure(ensemble.by_size, single=_best_member(ensemble.members))
    return [
        figure(
            "ensemble",
            fig,
            "accuracy against ensemble size",
            "members added best-first by validation accuracy",
        )
    ]


def distill_parts(ensemble: EnsembleData) -> list[Part]:
    """The distilled student against the ensemble and the student trained on labels only."""
    d = ensemble.distill
    students = d.get("students") if d is not None else None
    if d is None or not isinstance(students, dict):
        return [note("No student: babysit ensemble ... --distill CONFIG trains one.")]
    rows = [["ensemble", "-", *_cells(ensemble.scores, SCORES)]]
    for key, label in STUDENTS.items():
        s = students.get(key)
        if isinstance(s, dict):
            rows.append([label, fmt(s.get("dir"), limit=80), *_cells(s, SCORES)])
    how = f"T = {fmt(_finite(d.get('temperature')))}, alpha = {fmt(_finite(d.get('alpha')))}"
    return [
        paragraph(
            f"Student config {fmt(d.get('config'))}; {how}: loss = alpha T^2 "
            "KL(ensemble_T || student_T) + (1 - alpha) CE(student, labels)."
        ),
        table(["", "run dir", *SCORES], rows),
    ]


def ensemble_parts(ensemble: EnsembleData | None, why: str | None, study_dir: Path) -> list[Part]:
    """The study page's section: scores, members, accuracy against size, the students."""
    how = (
        f"`babysit ensemble --from-study {study_dir} --top K` ensembles the best trials and "
        f"writes {ENSEMBLE_FILE} here, which this section then shows."
    )
    if ensemble is None:
        return [note(why), note(how)] if why else [note(f"No {ENSEMBLE_FILE}: {how}")]
    parts = score_parts(ensemble)
    parts += [Html(f"<h3>Members ({len(ensemble.members)})</h3>"), *member_parts(ensemble)]
    if ensemble.by_size:
        parts += size_parts(ensemble)
    if ensemble.distill is not None:
        parts += [Html("<h3>Distillation</h3>"), *distill_parts(ensemble)]
    return parts
