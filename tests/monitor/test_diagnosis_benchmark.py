"""A small run of the planted-pathology benchmark: each pathology named, healthy runs quiet."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "diagnosis_bench", ROOT / "benchmarks" / "diagnosis.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


def test_every_planted_pathology_is_named(bench: ModuleType, tmp_path: Path) -> None:
    results = bench.run_suite(bench.PATHOLOGIES, [0], tmp_path)
    missed = {r.case.name: sorted(r.alarms) for r in results if not r.named}
    assert missed == {}


def test_healthy_runs_raise_no_warning(bench: ModuleType, tmp_path: Path) -> None:
    results = bench.run_suite(bench.HEALTHY, [0], tmp_path)
    assert len(results) == len(bench.HEALTHY) >= 10
    alarms = {r.case.name: sorted(r.alarms) for r in results if r.alarms}
    assert alarms == {}
