"""The demo's page: the whole recipe on one page, a section per step, linking the others.

Everything on it is read back from the files the steps wrote (``demo.json``,
``gradcheck.json``, ``sanity.json``, the study dir, the final run dir, the ensemble's
``ensemble.json``); the search, training and ensemble sections borrow the study and run
pages' own sections by name (``PAGES``), so a figure looks the same on every page. Each
step's full page is linked (``study/report.html``, ``final/report.html``,
``ensemble/report.html``). A step whose files are missing or unreadable gets a note.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from babysit._io import json_restore
from babysit.report._ensemble_page import EnsemblePageData, load_ensemble
from babysit.report._page import (
    PAGES,
    Html,
    Part,
    ReportError,
    SectionSpec,
    fmt,
    get_page,
    note,
    paragraph,
    table,
)
from babysit.report._run_data import RunData, load_run
from babysit.report._run_page import gradcheck_parts, sanity_parts
from babysit.report._study_data import StudyData, load_study
from babysit.report._study_ensemble import ENSEMBLE_FILE

__all__ = ["DEMO", "DEMO_FILE", "DemoData", "is_demo_dir", "load_demo"]

DEMO = get_page("demo")
DEMO_FILE = "demo.json"
STUDY_DIR, FINAL_DIR, ENSEMBLE_DIR = "study", "final", "ensemble"


@dataclass
class DemoData:
    dir: Path
    summary: dict[str, Any]  # demo.json
    gradcheck: dict[str, Any] | None = None
    sanity: dict[str, Any] | None = None
    study: StudyData | None = None
    final: RunData | None = None
    ensemble: EnsemblePageData | None = None
    problems: dict[str, str] = field(default_factory=dict)  # step -> why it is not shown


def is_demo_dir(path: Path) -> bool:
    return (path / DEMO_FILE).is_file()


def _json(path: Path) -> Any:
    try:
        return json_restore(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, RecursionError) as exc:
        raise ReportError(f"{path}: not valid JSON ({exc}); rewrite it or delete it") from exc


def _optional(data: DemoData, step: str, read: Callable[[], Any]) -> Any:
    """``read()``, or None with the reason noted for ``step``'s section."""
    try:
        return read()
    except ReportError as exc:
        data.problems[step] = str(exc)
        return None


def load_demo(directory: Path) -> DemoData:
    """Read a demo dir: demo.json required (else ReportError), the rest optional."""
    summary = _json(directory / DEMO_FILE)
    if not isinstance(summary, dict):
        raise ReportError(f"{directory / DEMO_FILE}: expected a JSON object")
    data = DemoData(dir=directory, summary=summary)
    for name in ("gradcheck", "sanity"):
        path = directory / f"{name}.json"
        value = _optional(data, name, lambda p=path: _json(p) if p.is_file() else None)  # type: ignore[misc]
        setattr(data, name, value if isinstance(value, dict) else None)
    data.study = _optional(data, "search", lambda: load_study(directory / STUDY_DIR))
    data.final = _optional(data, "train", lambda: load_run(directory / FINAL_DIR))
    data.ensemble = _optional(data, "ensemble", lambda: load_ensemble(directory / ENSEMBLE_DIR))
    return data


def _link(data: DemoData, sub: str, what: str) -> Html:
    page = data.dir / sub / "report.html"
    if not page.is_file():
        return Html("")
    href = html.escape(f"{sub}/report.html")
    return Html(f'<p><a href="{href}">{html.escape(what)}</a> (its own page)</p>')


def _borrow(page: str, names: Sequence[str], value: object) -> list[Part]:
    """The sections ``names`` of another page, rendered for ``value``, under h3 titles."""
    parts: list[Part] = []
    for name in names:
        spec = PAGES[page].entries[name]
        assert isinstance(spec, SectionSpec)
        parts += [Html(f"<h3>{html.escape(spec.title)}</h3>"), *spec.render(value)]
    return parts


def _missing(data: DemoData, step: str, what: str) -> list[Part]:
    return [note(data.problems.get(step) or f"No {what}: the demo stopped before this step.")]


@DEMO.section("summary", title="Summary")
def summary_section(data: DemoData) -> list[Part]:
    s = data.summary

    def shown(path: object) -> str:  # relative to the demo dir where it lies inside it
        try:
            return str(Path(str(path)).resolve().relative_to(data.dir.resolve()))
        except ValueError:
            return fmt(path, limit=90)

    rows = []
    for key, label in (("single", "best single model"), ("ema", "its EMA weights"),
                       ("ensemble", "ensemble")):  # fmt: skip
        scores = s.get(key)
        if isinstance(scores, dict):
            path = shown(scores["path"]) if "path" in scores else "-"
            rows.append([label, fmt(scores.get("val_acc")), fmt(scores.get("test_acc")), path])
    size = s.get("test_size")
    head = (
        f"task {fmt(s.get('task'))}; total {fmt(s.get('seconds'))} s; the test split "
        f"({fmt(size)} examples) is used once, at the end, by the ensemble step."
    )
    listed = s.get("steps")
    steps = listed if isinstance(listed, list) else []
    timing = [[fmt(r.get("title")), fmt(r.get("seconds")), fmt(r.get("line"))]
              for r in steps if isinstance(r, dict)]  # fmt: skip
    return [
        paragraph(head),
        table(["model", "val_acc", "test_acc", "checkpoint"], rows),
        Html("<h3>Steps</h3>"),
        table(["step", "seconds", "result"], timing),
    ]


@DEMO.section("gradcheck", title="1. Gradient check")
def gradcheck_section(data: DemoData) -> list[Part]:
    if data.gradcheck is None:
        return _missing(data, "gradcheck", "gradcheck.json")
    return gradcheck_parts(data.gradcheck)


@DEMO.section("sanity", title="2. Sanity checks")
def sanity_section(data: DemoData) -> list[Part]:
    if data.sanity is None:
        return _missing(data, "sanity", "sanity.json")
    return sanity_parts(data.sanity)


@DEMO.section("search", title="3. Coarse -> fine search")
def search_section(data: DemoData) -> list[Part]:
    if data.study is None:
        return _missing(data, "search", "study")
    link = _link(data, STUDY_DIR, "the study's report: every trial, the stages, curves")
    return [link, *_borrow("study", ("best", "scores", "stages"), data.study)]


@DEMO.section("train", title="4. Final training")
def train_section(data: DemoData) -> list[Part]:
    if data.final is None:
        return _missing(data, "train", "final run")
    link = _link(data, FINAL_DIR, "the final run's report: every probe of the monitor")
    return [link, *_borrow("run", ("findings", "loss", "accuracy"), data.final)]


@DEMO.section("ensemble", title="5. Ensemble")
def ensemble_section(data: DemoData) -> list[Part]:
    if data.ensemble is None:
        return _missing(data, "ensemble", ENSEMBLE_FILE)
    link = _link(data, ENSEMBLE_DIR, "the ensemble's report")
    return [link, *_borrow("ensemble", ("ensemble", "members", "size"), data.ensemble)]
