"""A small run of the planted-pathology benchmark (benchmarks/diagnosis.py).

One seed of a handful of setups, one per kind of rule: the pathology is named first and
healthy runs stay quiet. The full benchmark (both halves, 3 seeds) is the measurement.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
PICKED = (  # (pathology or healthy setup name) -- cheap ones, one per kind of rule
    "optimizer.zero_grad() forgotten / digits mlp momentum",
    "relu bias -5 (dead units) / digits mlp2 adam",
    "lr x1e4 (diverges) / digits mlp momentum 500",
    "weight decay or L2 0.5 (regularisation too strong) / digits sgd wd",
    "batch size 1-2 / digits mlp adam bs2",
    "digits mlp adam",
    "digits frozen first layer",
    "breast mlp adam bs16",
)


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


def test_the_benchmark_has_both_halves_of_enough_setups(bench: ModuleType) -> None:
    sick, healthy = bench.PATHOLOGIES, bench.HEALTHY
    kinds = {s.name.split(" / ")[0] for s in sick}
    assert len(kinds) >= 12 and len(healthy) * 3 >= 40
    for half in ("tune", "held_out"):
        assert {s.name.split(" / ")[0] for s in sick if s.half == half} == kinds
        assert [s for s in healthy if s.half == half]
    data = {s.data for s in [*sick, *healthy]}
    assert len(data) >= 6 and "digits-image" in data


def test_a_few_setups_are_named_first_and_healthy_ones_stay_quiet(
    bench: ModuleType, tmp_path: Path
) -> None:
    setups = [s for s in [*bench.PATHOLOGIES, *bench.HEALTHY] if s.name in PICKED]
    assert len(setups) == len(PICKED)
    results = bench.run_suite(setups, [0], tmp_path)
    wrong = {
        r.setup.name: [f.code for f in r.alarms]
        for r in results
        if (not r.first if r.setup.codes else r.alarms)
    }
    assert wrong == {}
