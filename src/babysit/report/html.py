"""The self-contained HTML report of a run, a study or an ensemble: ``write_report(dir)``.

One file per run, study, ensemble or demo: inline CSS, every figure a
PNG data URI, no scripts, fonts or network requests, so it opens from disk with no server.
The page machinery (pages, sections, :func:`~babysit.report._page.render_page`) is in
:mod:`babysit.report._page`; the run page's sections are in :mod:`babysit.report._run_page`,
the study page's in :mod:`babysit.report._study_page`.
"""

from __future__ import annotations

import os
from pathlib import Path

from babysit.report._demo_page import is_demo_dir, load_demo
from babysit.report._ensemble_page import is_ensemble_dir, load_ensemble
from babysit.report._page import render_page
from babysit.report._run_data import load_run
from babysit.report._run_page import run_title
from babysit.report._study_data import is_study_dir, load_study
from babysit.report._study_page import study_subtitle, study_title

__all__ = ["write_demo_report", "write_ensemble_report", "write_report", "write_study_report"]


def write_report(run_dir: str | os.PathLike[str]) -> Path:
    """Write ``run_dir/report.html`` (and ``run_dir/plots/*.png``) for a run dir; return its path.

    Reads metrics.jsonl in one streamed pass (bounded memory for any length) plus the optional
    config.toml, findings.json, gradcheck.json and sanity.json. Raises :class:`ReportError`
    (a :class:`~babysit.errors.BabysitError`) before writing anything when ``run_dir`` is not
    a directory, has no metrics.jsonl, or one of its files is malformed. A study dir (one
    that holds summary.json) gets the study page: see :func:`write_study_report`; an
    ensemble dir (ensemble.json, no summary.json) the ensemble page; a demo dir (demo.json)
    the demo's page.
    """
    if is_study_dir(Path(run_dir)):
        return write_study_report(run_dir)
    if is_demo_dir(Path(run_dir)):
        return write_demo_report(run_dir)
    if is_ensemble_dir(Path(run_dir)):
        return write_ensemble_report(run_dir)
    run = load_run(Path(run_dir))
    subtitle = f"{run.run_dir.resolve()} - open this file from disk; nothing is fetched."
    return render_page("run", run, run.run_dir, title=run_title(run.run_dir), subtitle=subtitle)


def write_study_report(study_dir: str | os.PathLike[str]) -> Path:
    """Write ``study_dir/report.html`` (and ``plots/*.png``) for a search's study dir.

    Reads summary.json (required; malformed: :class:`ReportError` before anything is
    written), the top trials' metrics.jsonl (streamed, at most a few) and the optional
    ensemble.json; returns the page's path.
    """
    data = load_study(Path(study_dir))
    return render_page(
        "study", data, data.dir, title=study_title(data), subtitle=study_subtitle(data)
    )


def write_ensemble_report(ensemble_dir: str | os.PathLike[str]) -> Path:
    """Write ``ensemble_dir/report.html`` from its ensemble.json (babysit ensemble's dir)."""
    data = load_ensemble(Path(ensemble_dir))
    subtitle = f"{data.dir.resolve()} - open this file from disk; nothing is fetched."
    return render_page("ensemble", data, data.dir, title="babysit ensemble", subtitle=subtitle)


def write_demo_report(demo_dir: str | os.PathLike[str]) -> Path:
    """Write ``demo_dir/report.html``: the whole recipe, read back from babysit demo's files."""
    data = load_demo(Path(demo_dir))
    subtitle = f"{data.dir.resolve()} - open this file from disk; nothing is fetched."
    title = "babysit demo: the whole recipe"
    return render_page("demo", data, data.dir, title=title, subtitle=subtitle)
