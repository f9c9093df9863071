"""What every adapter test checks of a run dir: the files, and a report that stands alone."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path
from typing import Any


class _Tags(HTMLParser):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.sections: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag == "section":
            self.sections.append(str(a["id"]))


def records(run: Path, kind: str) -> list[dict[str, Any]]:
    """The records of one kind in ``run/metrics.jsonl``."""
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def check_run_dir(run: Path, *, batches: int) -> list[dict[str, Any]]:
    """metrics.jsonl with ``batches`` batch records (one per optimizer step) and epoch records,
    findings.json, and a report.html that is self-contained (the checks of
    tests/report/test_html.py) with the findings first; returns the findings."""
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    kinds = [r["kind"] for r in records]
    assert kinds.count("batch") == batches
    assert "epoch" in kinds and "probe" in kinds
    steps = [r["step"] for r in records if r["kind"] == "batch"]
    assert steps == list(range(1, batches + 1))
    findings: list[dict[str, Any]] = json.loads((run / "findings.json").read_text())
    text = (run / "report.html").read_text(encoding="utf-8")
    page = _Tags(text)
    assert page.sections[0] == "findings"
    assert not {t for t, _ in page.tags} & {"script", "link", "iframe", "object", "embed"}
    assert "http://" not in text and "https://" not in text
    urls = [a.get("src") or a.get("href") or "" for _, a in page.tags]
    images = [a["src"] for t, a in page.tags if t == "img"]
    assert images and all(str(u).startswith("data:image/png;base64,") for u in images)
    assert all(u.startswith(("data:", "#")) for u in urls if u)
    return findings


def codes(findings: list[dict[str, Any]], *, at_least: str = "warning") -> list[str]:
    """The codes of the findings at ``at_least`` severity or worse."""
    order = ("info", "warning", "error")
    return [f["code"] for f in findings if order.index(f["severity"]) >= order.index(at_least)]
