"""The search benchmarks' own logic: layouts, the budget to reach a score, tiny runs."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        f"{name}_bench", ROOT / "benchmarks" / f"{name}.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def quality() -> ModuleType:
    return _load("search_quality")


@pytest.fixture(scope="module")
def overhead() -> ModuleType:
    return _load("search_overhead")


def test_every_method_plans_the_budget_with_the_last_stage_at_full_length(
    quality: ModuleType,
) -> None:
    for layout in quality.LAYOUTS.values():
        for method in quality.methods(budget=200, epochs=10, layout=layout):
            assert method.stages[-1]["epochs"] == 10
            if not method.open_ended:
                assert quality.planned(method.stages) == 200, method
    assert quality.COARSE_TO_FINE in quality.LAYOUTS


def test_layout_stages_rounds_to_whole_epochs_of_at_least_one(quality: ModuleType) -> None:
    stages = quality.layout_stages(((0.1, 0.25), (0.3, 0.25), (1.0, 0.5)), budget=60, epochs=5)
    assert stages == [
        {"epochs": 1, "trials": 15},
        {"epochs": 2, "trials": 8},
        {"epochs": 5, "trials": 6},
    ]


def test_budget_to_reach_counts_earlier_trials_whole_and_this_one_to_its_epoch(
    quality: ModuleType,
) -> None:
    log = quality.TrialLog
    trials = [
        log(0, 0, "complete", [0.5, 0.6, 0.7], 3.0),
        log(1, 0, "diverged", [0.2], 1.4),  # diverged within epoch 2
        log(2, 0, "pruned", [0.6], 1.0),
        log(3, 1, "complete", [0.7, 0.8, 0.9], 3.0),
    ]
    assert quality.budget_to_reach(trials, 0.7) == 3.0
    assert quality.budget_to_reach(trials, 0.8) == 3.0 + 1.4 + 1.0 + 2
    assert quality.budget_to_reach(trials, 0.95) == math.inf


def test_trial_log_reads_epoch_scores_and_where_a_run_diverged(quality: ModuleType) -> None:
    records = [
        {"kind": "event", "what": "watch", "step": 0},
        {"kind": "epoch", "epoch": 1, "val_acc": 0.5},
        {"kind": "batch", "step": 20, "loss": 1.0},
        {"kind": "epoch", "epoch": 2, "val_acc": 0.6},
        {"kind": "event", "what": "diverged", "epoch": 2.25},
    ]
    t = quality.trial_log(4, 1, "diverged", records)
    assert (t.number, t.stage, t.scores, t.spent) == (4, 1, [0.5, 0.6], 2.25)


def test_an_open_ended_search_stops_once_the_budget_is_spent(
    quality: ModuleType, tmp_path: Path
) -> None:
    method = quality.Method("hyperband", [{"epochs": 2, "trials": 6}], open_ended=True)
    out = quality.run_search("spiral", 0, method, budget=5, root=tmp_path)
    assert len(out.trials) == 3 and out.spent == 6  # 2 + 2 + 2 >= 5
    assert 0.0 <= out.test <= 1.0 and out.best_val == max(max(t.scores) for t in out.trials)


def test_overhead_modes_run_their_trivial_trials(overhead: ModuleType, tmp_path: Path) -> None:
    for name, run in overhead.modes(workers=False).items():
        where = tmp_path / name.replace(" ", "-").replace(",", "")
        where.mkdir()
        assert run(5, where) > 0
        writes = overhead.journal_writes(where)
        assert (writes is None) == ("journal" not in name)
        if writes is not None:
            assert writes >= 4 * 5  # one create, state, report and tell per trial at least
