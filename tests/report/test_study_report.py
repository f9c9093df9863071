"""The study page: write_report(study_dir) on a hand-written study and on a real search."""

from __future__ import annotations

import json
import math
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
from typer.testing import CliRunner

from babysit.cli import app
from babysit.errors import ReportError
from babysit.report._study_data import TOP_CURVES, load_study
from babysit.report._study_page import param_axes
from babysit.report._study_plots import score_figure
from babysit.report.html import write_report, write_study_report

from .study_dirs import BEST, STAGE_RANGES, TRIALS, make_study_dir

SECTIONS = ["best", "trials", "scores", "stages", "curves", "pbt", "ensemble"]


class _Page(HTMLParser):
    """Section ids in order, each section's text, figure ids, and the #trials table rows."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.sections: list[str] = []
        self.text: dict[str, str] = {}
        self.figures: list[str] = []
        self.rows: list[tuple[str, list[str]]] = []  # (class, cells) of the trials table
        self.links: list[str] = []
        self._section = ""
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "section":
            self._section = str(a["id"])
            self.sections.append(self._section)
            self.text[self._section] = ""
        elif tag == "figure":
            self.figures.append(str(a["id"]).removeprefix("fig-"))
        elif tag == "a" and self._section:
            self.links.append(str(a["href"]))
        elif tag == "tr" and self._section == "trials":
            self._row = []
            self.rows.append((a.get("class") or "", self._row))
        elif tag == "td" and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._row is not None and self._cell is not None:
            self._row.append("".join(self._cell))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._section:
            self.text[self._section] += data
        if self._cell is not None:
            self._cell.append(data)


def _page(path: Path) -> _Page:
    return _Page(path.read_text(encoding="utf-8"))


def _values(page: _Page) -> list[float]:
    return [float(cells[3]) if cells[3] != "-" else math.nan for _, cells in page.rows[1:]]


def test_study_page_has_every_section_in_order(synthetic_study: Path) -> None:
    out = write_report(synthetic_study)
    assert out == synthetic_study / "report.html"
    page = _page(out)
    assert page.sections == SECTIONS
    assert page.figures == ["scores", "curves"]
    assert (synthetic_study / "plots" / "scores.png").is_file()
    assert "babysit study: synthetic" in out.read_text(encoding="utf-8")
    assert "No ensemble.json: `babysit ensemble --from-study" in page.text["ensemble"]


def test_best_trial_links_its_run_report(synthetic_study: Path) -> None:
    page = _page(write_study_report(synthetic_study))
    assert f"Trial {BEST} (stage 1, 3 epochs): val_acc = 0.93 (max is better)" in page.text["best"]
    assert f"trials/s1-{BEST}/report.html" in page.links
    assert "13 trials: 7 complete, 2 pruned, 2 diverged, 1 failed, 1 lost" in page.text["best"]


@pytest.mark.parametrize("direction", ["max", "min"])
def test_trials_table_is_ordered_by_value_honouring_the_direction(
    tmp_path: Path, direction: str
) -> None:
    study = make_study_dir(tmp_path / "study", direction=direction)
    page = _page(write_report(study))
    values = _values(page)
    scored = [v for v in values if math.isfinite(v)]
    assert scored == sorted(scored, reverse=direction == "max")
    expected = sorted(t[5] for t in TRIALS.values() if t[5] is not None and math.isfinite(t[5]))
    assert scored == pytest.approx(expected[:: -1 if direction == "max" else 1])
    assert all(not math.isfinite(v) for v in values[len(scored) :])  # unscored trials last


def test_rows_of_diverged_pruned_and_failed_trials_are_styled(synthetic_study: Path) -> None:
    page = _page(write_report(synthetic_study))
    classes = {int(cells[0]): cls for cls, cells in page.rows[1:]}
    assert classes == {
        n: state + (" best" if n == BEST else "") for n, (_, state, *_) in TRIALS.items()
    }
    assert "the sanity check failed" in page.text["trials"]  # the failed trial's error


def test_border_warning_is_called_out_with_its_advice(synthetic_study: Path) -> None:
    page = _page(write_report(synthetic_study))
    text = " ".join(page.text["best"].split())
    assert "optim.lr: high side, stage 0" in text
    assert "The best value 8 lies in the outer 5% of the range [1e-06, 10] (in log space)" in text
    assert "widen the range on the high side: move its high end above 10" in text
    assert f"Stage 1 searched {STAGE_RANGES[1]['optim.lr']}" in text
    assert "optim.lr (high)" in page.text["stages"]


def test_scatter_uses_a_log_axis_for_a_log_range_and_draws_every_stage_edge(
    synthetic_study: Path,
) -> None:
    data = load_study(synthetic_study)
    axes = {a.name: a for a in param_axes(data)}
    lr, dropout, mu = axes["optim.lr"], axes["model.dropout"], axes["optim.mu"]
    assert lr.log and not dropout.log and mu.choices == ("0.5", "0.9", "0.99")
    assert lr.edges == [(0, 1e-6, 10.0), (1, 0.00158, 31.6)]
    assert (
        lr.warning is not None and "high edge (stage 0)" in lr.warning and dropout.warning is None
    )
    fig = score_figure(list(axes.values()), data.trials, metric=data.metric, best=data.best_number)
    ax_lr, ax_dropout = fig.axes[:2]
    assert ax_lr.get_xscale() == "log" and ax_dropout.get_xscale() == "linear"
    assert "BORDER WARNING" in ax_lr.get_title() and "BORDER" not in ax_dropout.get_title()
    edges = sorted({ln.get_xdata()[0] for ln in ax_lr.get_lines()})
    assert edges == pytest.approx(sorted({1e-6, 10.0, 0.00158, 31.6}))
    points = {
        (float(x), float(y)) for c in ax_lr.collections for x, y in c.get_offsets()
    }  # every drawn trial: scored ones at their score
    for _, _, x, _, _, value in TRIALS.values():
        if value is not None and math.isfinite(value):
            assert (x, value) in points


def test_diverged_trials_are_marked_along_the_bottom(synthetic_study: Path) -> None:
    data = load_study(synthetic_study)
    fig = score_figure(param_axes(data), data.trials, metric=data.metric, best=data.best_number)
    ax = fig.axes[0]
    diverged = [c for c in ax.collections if c.get_gid() == "diverged"]
    assert len(diverged) == 1
    xs = sorted(float(x) for x, _ in diverged[0].get_offsets())
    assert xs == [9.0, 28.0]  # the two diverged trials' lr, drawn in axes height at the bottom
    assert all(float(y) < 0.1 for _, y in diverged[0].get_offsets())


def test_only_the_top_trials_curves_are_read(tmp_path: Path) -> None:
    study = make_study_dir(tmp_path / "study", extra=TOP_CURVES + 4)
    data = load_study(study)
    assert len(data.curves) == TOP_CURVES
    assert data.curves[0].trial.number == BEST  # the summary's best first, then by score
    values = [c.trial.value for c in data.curves[1:]]
    assert values == sorted(values, reverse=True)  # type: ignore[type-var]


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("{not json", "cannot read the study summary"),
        ("[1, 2]", "not a study summary"),
        ('{"best": {}, "stages": []}', "not a study summary"),
        ('{"best": {}, "stages": {}, "border_warnings": []}', "'stages' is not a list"),
    ],
)
def test_a_broken_summary_is_one_line_report_error(tmp_path: Path, text: str, why: str) -> None:
    study = make_study_dir(tmp_path / "study")
    (study / "summary.json").write_text(text, encoding="utf-8")
    with pytest.raises(ReportError, match=why) as info:
        write_report(study)
    assert "\n" not in str(info.value)
    assert not (study / "report.html").exists()


def test_malformed_trials_and_a_trial_dir_outside_the_study_are_left_out(tmp_path: Path) -> None:
    study = make_study_dir(tmp_path / "study")
    (tmp_path / "outside").mkdir()
    summary = json.loads((study / "summary.json").read_text())
    summary["trials"] += ["junk", {"state": "complete"}]  # no number: not a trial
    summary["trials"][0]["dir"] = "../outside"
    (study / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    data = load_study(study)
    assert data.skipped == 2 and len(data.trials) == len(TRIALS)
    assert next(t for t in data.trials if t.number == 0).dir is None
    assert "2 malformed records of summary.json left out" in _page(write_report(study)).text["best"]


def test_ensemble_results_with_accuracy_against_size(synthetic_study: Path) -> None:
    ensemble = {
        "members": [
            {"path": "trials/s1-9", "val_acc": 0.93, "test_acc": 0.92},
            {"path": "trials/s1-8", "val_acc": 0.91, "test_acc": 0.90},
        ],
        "ensemble": {"val_acc": 0.95, "test_acc": 0.94, "val_loss": 0.2, "test_loss": 0.22},
        "by_size": [{"size": 1, "val_acc": 0.93, "test_acc": 0.92}, {"size": 2, "val_acc": 0.95}],
    }
    (synthetic_study / "ensemble.json").write_text(json.dumps(ensemble), encoding="utf-8")
    page = _page(write_report(synthetic_study))
    assert page.figures == ["scores", "curves", "ensemble"]
    assert "test_acc" in page.text["ensemble"] and "0.94" in page.text["ensemble"]
    assert "trials/s1-8" in page.text["ensemble"]


def test_a_broken_ensemble_json_gives_its_section_a_note(synthetic_study: Path) -> None:
    (synthetic_study / "ensemble.json").write_text("{oops", encoding="utf-8")
    page = _page(write_report(synthetic_study))
    assert "ensemble.json: not valid JSON" in page.text["ensemble"]
    assert page.sections == SECTIONS


def test_cli_report_writes_the_study_page(synthetic_study: Path) -> None:
    result = CliRunner().invoke(app, ["report", str(synthetic_study)])
    assert result.exit_code == 0, result.output
    assert (synthetic_study / "report.html").is_file()
    (synthetic_study / "summary.json").write_text("[]", encoding="utf-8")
    result = CliRunner().invoke(app, ["report", str(synthetic_study)])
    assert result.exit_code == 2 and "not a study summary" in result.output


@pytest.mark.slow
def test_report_of_a_real_search(searched_study: Path, tmp_path: Path) -> None:
    study = Path(shutil.copytree(searched_study, tmp_path / "study"))
    summary = json.loads((study / "summary.json").read_text())
    page = _page(write_report(study))
    assert page.sections == SECTIONS and page.figures == ["scores", "curves"]
    best = summary["best"]["trial"]
    assert f"Trial {best} (stage 1, 2 epochs)" in page.text["best"]
    classes = [cls for cls, _ in page.rows[1:]]
    assert len(classes) == len(summary["trials"]) and classes.count("complete best") == 1
    for w in summary["border_warnings"]:
        assert f"{w['param']}: {w['side']} side, stage {w['stage']}" in page.text["best"]
    data = load_study(study)
    assert len(data.curves) == min(TOP_CURVES, len(summary["trials"]))
    assert all(c.loss is not None and c.loss.total > 0 for c in data.curves)
    assert [a.log for a in param_axes(data)] == [True, True]  # lr and reg: log ranges


def test_an_unreadable_trial_run_loses_only_its_curve(synthetic_study: Path) -> None:
    (synthetic_study / "trials" / "s1-8" / "metrics.jsonl").write_bytes(b"\xff\xfe\x00 not utf-8")
    (synthetic_study / "trials" / "s1-11" / "findings.json").write_text("{oops")
    data = load_study(synthetic_study)
    # a broken findings.json costs a curve nothing (the report leaves out only what broke)
    assert {c.trial.number for c in data.curves} == {9, 5, 1, 0, 6, 7, 11}
    assert [n.split(":")[0] for n in data.curve_notes] == ["trial 8"]
    assert "line 1: not valid UTF-8" in data.curve_notes[0]
    page = _page(write_report(synthetic_study))
    assert "not read: trial 8" in page.text["curves"] and "curves" in page.figures
