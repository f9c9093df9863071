"""The self-contained HTML report: ``write_report(run_dir)`` and the section machinery.

One file per run (or, later, per study, ensemble, demo): inline CSS, every figure a PNG data
URI, no scripts, fonts or network requests, so it opens from disk with no server. A page is
a list of sections registered by name; a new kind of page is new sections on the same
machinery::

    @section("study", "best", title="Best trial")
    def best_trial(study: StudyData) -> list[Part]:
        return [table(["param", "value"], study.best.items())]

    render_page("study", study_data, study_dir, title="babysit study")
"""

from __future__ import annotations

import os
from pathlib import Path

from babysit.report import _run_page
from babysit.report._page import (
    PAGES,
    Html,
    Image,
    Part,
    ReportError,
    SectionSpec,
    note,
    paragraph,
    render_page,
    section,
    table,
)
from babysit.report._run_data import RunData, load_run

__all__ = [
    "PAGES",
    "Html",
    "Image",
    "Part",
    "ReportError",
    "RunData",
    "SectionSpec",
    "load_run",
    "note",
    "paragraph",
    "render_page",
    "section",
    "table",
    "write_report",
]


def write_report(run_dir: str | os.PathLike[str]) -> Path:
    """Write ``run_dir/report.html`` (and ``run_dir/plots/*.png``) for a run dir; return its path.

    Reads metrics.jsonl in one streamed pass (bounded memory for any length) plus the optional
    config.toml, findings.json, gradcheck.json and sanity.json. Raises :class:`ReportError`
    (a :class:`~babysit.errors.BabysitError`) before writing anything when ``run_dir`` is not
    a directory, has no metrics.jsonl, or one of its files is malformed.
    """
    run = load_run(Path(run_dir))
    subtitle = f"{run.run_dir.resolve()} - open this file from disk; nothing is fetched."
    return render_page(
        "run", run, run.run_dir, title=_run_page.run_title(run.run_dir), subtitle=subtitle
    )
