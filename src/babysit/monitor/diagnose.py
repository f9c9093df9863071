"""Diagnoses: rules that turn a run's metrics into findings with the notes' advice.

Each rule is a small function registered under its findings.json code (``DIAGNOSES``), with
its thresholds as named, documented keyword defaults; it reads a :class:`RunHistory` (the
run's records in bounded memory) and never touches hooks or files. The same rules run live
(``Monitor.findings()``) and post hoc on a metrics.jsonl stream (:func:`diagnose`). The
codes are :data:`CODES` (DESIGN.md's, then the ones added since); a rule for a new code adds
the code there. :func:`~babysit.monitor._ranking.rank` then keeps the causes, drops what they
explain and puts the one to act on first.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from babysit._io import json_safe, write_json_atomic
from babysit.monitor import (  # noqa: F401  (they register the rules, in this order)
    _curve_rules,
    _epoch_rules,
    _layer_rules,
    _update_rules,
)
from babysit.monitor._findings import CODES, DIAGNOSES, SEVERITIES, Finding, diagnosis
from babysit.monitor._history import RunHistory
from babysit.monitor._ranking import TIERS, order_key, rank

__all__ = [
    "CODES",
    "DIAGNOSES",
    "SEVERITIES",
    "TIERS",
    "Finding",
    "RunHistory",
    "diagnose",
    "diagnosis",
    "run_diagnoses",
    "sort_findings",
    "write_findings",
]


def sort_findings(findings: Iterable[Finding]) -> list[Finding]:
    """The one to act on first: by cause (:data:`TIERS`), errors first, then step; info last."""
    return sorted(findings, key=order_key)


def run_diagnoses(history: RunHistory) -> list[Finding]:
    """Every registered rule over ``history``; the causes, the one to act on first."""
    return rank(f for rule in DIAGNOSES.values() for f in rule(history))


def diagnose(records: Iterable[dict[str, Any]]) -> list[Finding]:
    """The diagnoses of a metrics.jsonl stream (e.g. ``read_metrics(path)``), post hoc."""
    return run_diagnoses(RunHistory.from_records(records))


def write_findings(path: str | os.PathLike[str], findings: Iterable[Finding]) -> Path:
    """Write findings.json atomically (temp file + os.replace), the one to act on first."""
    return write_json_atomic(path, json_safe([f.to_dict() for f in sort_findings(findings)]))
