"""The ensemble built from a study: its ``ensemble.json`` read (untrusted) and drawn.

``babysit ensemble --from-study DIR --top K`` (a later issue) writes ``DIR/ensemble.json``:
``{members: [{path, val_acc, test_acc}], ensemble: {val_acc, test_acc, val_loss,
test_loss}}`` (DESIGN.md), and optionally ``by_size: [{size, val_acc, test_acc}]``, the
ensemble's accuracy as members are added. A file that does not parse or has another shape
gives the section a note, not an error: the rest of the study page stands.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from babysit._io import read_json_file
from babysit.report import plots
from babysit.report._page import Html, Part, figure, fmt, note, table
from babysit.report._run_data import json_number

__all__ = [
    "ENSEMBLE_BY_SIZE",
    "ENSEMBLE_FILE",
    "EnsembleData",
    "ensemble_figure",
    "ensemble_parts",
    "read_ensemble",
]

ENSEMBLE_FILE = "ensemble.json"
ENSEMBLE_BY_SIZE = "by_size"  # optional: [{size, val_acc, test_acc}]
ACCURACIES = ("val_acc", "test_acc")
MAX_MEMBERS = 100  # members listed


@dataclass(frozen=True)
class EnsembleData:
    scores: dict[str, float]  # the ensemble's finite numbers: val_acc, test_acc, ...
    members: list[Mapping[str, Any]]
    by_size: list[dict[str, float]]  # {size, val_acc?, test_acc?} by size


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
    scores = value.get("ensemble", {})
    return EnsembleData(
        scores={str(k): x for k, v in scores.items() if (x := _finite(v)) is not None},
        members=_objects(value.get("members")),
        by_size=_by_size(value.get(ENSEMBLE_BY_SIZE)),
    ), None


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


def ensemble_parts(ensemble: EnsembleData | None, why: str | None, study_dir: Path) -> list[Part]:
    """The ensemble's scores, its members, and accuracy against size when given."""
    how = (
        f"an ensemble of the best trials ({study_dir}) is shown here once {ENSEMBLE_FILE} "
        "is written; this babysit has no ensemble command yet."
    )
    if ensemble is None:
        return [note(why), note(how)] if why else [note(f"No {ENSEMBLE_FILE}: {how}")]
    scores = [(k, fmt(v)) for k, v in ensemble.scores.items()]
    parts: list[Part] = [table(["ensemble", "value"], scores) if scores else note("No scores.")]
    cols = ["path", *ACCURACIES]
    rows = [
        [fmt(m.get("path"), limit=80), *(fmt(_finite(m.get(c))) for c in ACCURACIES)]
        for m in ensemble.members[:MAX_MEMBERS]
    ]
    parts += [Html(f"<h3>Members ({len(ensemble.members)})</h3>"), table(cols, rows)]
    if ensemble.by_size:
        fig = ensemble_figure(ensemble.by_size, single=_best_member(ensemble.members))
        parts.append(figure("ensemble", fig, "accuracy against ensemble size"))
    return parts
