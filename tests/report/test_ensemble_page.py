"""The ensemble page: write_report on a dir holding ensemble.json (hand-written here)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from babysit.errors import ReportError
from babysit.report.html import write_report

ENSEMBLE: dict[str, Any] = {
    "members": [
        {
            "path": "members/seed0/checkpoints/epoch=003-val_acc=0.9000.pt",
            "val_acc": 0.90,
            "test_acc": 0.89,
            "val_loss": 0.31,
            "test_loss": 0.33,
            "source": "seeds",
        },
        {
            "path": "/abs/run/checkpoints/ema/epoch=002-val_acc=0.8800.pt",
            "val_acc": 0.88,
            "test_acc": 0.87,
            "val_loss": 0.35,
            "test_loss": 0.36,
            "source": "member",
        },
    ],
    "ensemble": {"val_acc": 0.93, "test_acc": 0.915, "val_loss": 0.25, "test_loss": 0.27},
    "average": "probs",
    "mean_member": {"val_acc": 0.89, "test_acc": 0.88, "val_loss": 0.33, "test_loss": 0.345},
    "gain": {"val_acc": 0.04, "test_acc": 0.035, "val_loss": -0.08, "test_loss": -0.075},
    "by_size": [
        {"size": 1, "val_acc": 0.90, "test_acc": 0.89},
        {"size": 2, "val_acc": 0.93, "test_acc": 0.915},
    ],
    "distill": {
        "temperature": 4.0,
        "alpha": 0.9,
        "config": "student.toml",
        "students": {
            "distilled": {
                "dir": "students/distilled",
                "val_acc": 0.92,
                "test_acc": 0.905,
                "val_loss": 0.28,
                "test_loss": 0.3,
            },
            "labels": {
                "dir": "students/labels",
                "val_acc": 0.9,
                "test_acc": 0.886,
                "val_loss": 0.32,
                "test_loss": 0.34,
            },
        },
    },
    "notes": ["seeds: seed4 left no checkpoint"],
}


def _write(tmp_path: Path, data: Any) -> Path:
    (tmp_path / "ensemble.json").write_text(json.dumps(data), encoding="utf-8")
    return write_report(tmp_path)


def test_the_ensemble_page_has_its_sections_in_order(tmp_path: Path) -> None:
    page = _write(tmp_path, ENSEMBLE).read_text(encoding="utf-8")
    assert re.findall(r'<section id="(\w+)"', page) == ["ensemble", "members", "size", "distill"]
    assert "<title>babysit ensemble</title>" in page
    assert "gain over the mean member" in page and "+0.04" in page
    assert "ensemble (probs)" in page and "seeds: seed4 left no checkpoint" in page
    assert "ema/epoch=002-val_acc=0.8800.pt" in page
    assert re.findall(r'<figure id="fig-(\w+)"', page) == ["ensemble"]
    assert (tmp_path / "plots" / "ensemble.png").is_file()
    distill = page[page.index('<section id="distill"') :]
    assert "T = 4, alpha = 0.9" in distill
    assert "students/distilled" in distill and "0.905" in distill and "0.886" in distill


def test_an_ensemble_without_student_or_sizes_says_how_to_get_them(tmp_path: Path) -> None:
    data = {k: v for k, v in ENSEMBLE.items() if k not in ("distill", "by_size")}
    page = _write(tmp_path, data).read_text(encoding="utf-8")
    assert "--distill CONFIG trains one" in page and "No by_size in ensemble.json" in page


@pytest.mark.parametrize(
    ("text", "match"), [("{oops", "not valid JSON"), ('{"members": 3}', "expected")]
)
def test_a_malformed_ensemble_json_is_a_report_error(tmp_path: Path, text: str, match: str) -> None:
    (tmp_path / "ensemble.json").write_text(text, encoding="utf-8")
    with pytest.raises(ReportError, match=match):
        write_report(tmp_path)
    assert not (tmp_path / "report.html").exists()
