"""The study page's population-based training section, on a hand-written lineage."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from babysit.report._study_data import load_study
from babysit.report._study_pbt import ancestry, pbt_trials
from babysit.report.html import write_report


def _event(epoch: Any, source: int, before: float, after: float, **more: Any) -> dict[str, Any]:
    return {
        "epoch": epoch,
        "source_trial": source,
        "before": {"optim.lr": before},
        "after": {"optim.lr": after},
        "resampled": [],
        "score": 0.5,
        "source_score": 0.8,
        "diverged": False,
    } | more


# stage-1 trials of the hand-written study (best: 9): 9 took 8's weights after epoch 2, 8
# took 11's after epoch 1; 10 diverged and took 9's; 11's lineage is malformed (not a list)
LINEAGE: dict[int, Any] = {
    8: [_event(1, 11, 12.0, 2.4)],
    9: [_event(1, 11, 20.0, 1.6, resampled=["optim.lr"]), _event(2, 8, 1.6, 2.88)],
    10: [_event("x", 9, 0.0, 0.0), _event(1, 9, 28.0, 24.0, diverged=True, score=None)],
    11: "not a list",
}


def _with_lineage(study: Path) -> Path:
    path = study / "summary.json"
    summary = json.loads(path.read_text())
    for record in summary["trials"]:
        lineage = LINEAGE.get(record["number"])
        if lineage is not None:
            record["pbt_lineage"] = lineage
            last = lineage[-1]["after"] if isinstance(lineage, list) else {}
            record["final_params"] = last
    path.write_text(json.dumps(summary))
    return study


def _section(page: str) -> str:
    return page[page.index('<section id="pbt">') :].split("</section>")[0]


def test_lineage_records_are_read_and_malformed_ones_left_out(synthetic_study: Path) -> None:
    trials = {t.number: t for t in pbt_trials(load_study(_with_lineage(synthetic_study)))}
    assert sorted(trials) == [8, 9, 10]  # 11's lineage is not a list
    assert [e.epoch for e in trials[10].events] == [1]  # the event with epoch "x" is dropped
    assert trials[10].events[0].diverged and trials[10].events[0].score is None
    assert trials[9].events[0].resampled == ("optim.lr",)
    assert trials[9].final == {"optim.lr": 2.88} and trials[9].params["optim.lr"] == 20.0
    # 9's weights are 8's since epoch 2, which were 11's since epoch 1
    assert ancestry(9, trials) == [(9, 2), (8, 1), (11, None)]
    assert ancestry(11, trials) == [(11, None)]


def test_the_section_shows_the_ancestry_the_values_and_every_event(synthetic_study: Path) -> None:
    page = write_report(_with_lineage(synthetic_study)).read_text()
    section = _section(page)
    assert (
        "trial 9 (its weights since epoch 2) &lt;- trial 8 (its weights since epoch 1) &lt;- "
        in section
    )
    assert 'id="fig-pbt"' in section and (synthetic_study / "plots" / "pbt.png").is_file()
    rows = [r.split("</tr>")[0] for r in section.split("<tbody>")[1].split("<tr>")[1:]]
    cells = [[c.split("</td>")[0] for c in r.split("<td>")[1:]] for r in rows]
    assert [(c[0], c[1], c[2]) for c in cells] == [
        ("1", "8", "11"),
        ("1", "9", "11"),
        ("1", "10", "9"),
        ("2", "9", "8"),
    ]
    assert cells[1][5] == "20 -&gt; 1.6*" and cells[2][3] == "diverged"


def test_a_study_without_pbt_gets_a_note(synthetic_study: Path) -> None:
    section = _section(write_report(synthetic_study).read_text())
    assert 'mode = "pbt"' in section.replace("&quot;", '"') and "<table" not in section
