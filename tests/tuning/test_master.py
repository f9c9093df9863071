"""babysit.search(): log-scale sampling, stages with zoom and border warnings, summary.json."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from optuna.storages.journal._storage import JournalOperation
from scipy import stats

import babysit
from babysit.errors import ConfigError
from babysit.tuning.dimensions import Choice, Range, parse_dimension
from babysit.tuning.progress import SearchCallback

from .conftest import load_journal, quadratic_in_log_lr


@pytest.mark.slow
def test_sampled_lr_is_uniform_in_log10_on_minus_6_to_1(tmp_path: Path) -> None:
    """The notes' ``10 ** uniform(-6, 1)``: a KS test on the values the storage holds."""
    config = {
        "search": {
            "seed": 7,
            "space": {"optim.lr": "loguniform(1e-6, 1e1)"},
            "stage": [{"epochs": 1, "trials": 500}],
        }
    }
    study = babysit.search(config, objective=lambda p, r: 0.0, out=tmp_path / "s")
    lrs = np.array([t.params["optim.lr"] for t in load_journal(study).trials])
    assert len(lrs) == 500 and ((lrs >= 1e-6) & (lrs <= 1e1)).all()
    assert stats.kstest(np.log10(lrs), stats.uniform(loc=-6, scale=7).cdf).pvalue > 0.01
    # the test has power: the same values taken linearly are far from uniform on [-6, 1]
    assert stats.kstest(lrs * 7 / 10 - 6, stats.uniform(loc=-6, scale=7).cdf).pvalue < 1e-6


def test_the_optimum_above_the_range_warns_high_and_the_next_stage_widens(
    tmp_path: Path,
) -> None:
    config = {
        "search": {
            "space": {"optim.lr": "loguniform(1e-6, 1e-4)"},
            "stage": [{"epochs": 1, "trials": 100}, {"epochs": 2, "trials": 30}],
        }
    }
    study = babysit.search(config, objective=quadratic_in_log_lr(1e-2), out=tmp_path / "s")
    first = [w for w in study.border_warnings if w["stage"] == 0]
    assert [(w["param"], w["side"], w["low"], w["high"]) for w in first] == [
        ("optim.lr", "high", 1e-6, 1e-4)
    ]
    assert 10**-4.1 <= first[0]["value"] <= 1e-4
    second = parse_dimension(study.stages[1]["ranges"]["optim.lr"])
    assert isinstance(second, Range) and second.high > 1e-4
    assert study.best["params"]["optim.lr"] > 1e-4  # it found better values past the border


def test_a_range_that_contains_the_optimum_does_not_warn_and_zooms(tmp_path: Path) -> None:
    config = {
        "search": {
            "space": {"optim.lr": "loguniform(1e-6, 1e1)"},
            "stage": [{"epochs": 1, "trials": 100}, {"epochs": 2, "trials": 20}],
        }
    }
    study = babysit.search(config, objective=quadratic_in_log_lr(1e-3), out=tmp_path / "s")
    assert study.border_warnings == []
    first, second = (parse_dimension(s["ranges"]["optim.lr"]) for s in study.stages)
    assert isinstance(first, Range) and isinstance(second, Range)
    best_first = max((t for t in study.trials if t["stage"] == 0), key=lambda t: t["value"])[
        "params"
    ]["optim.lr"]
    assert second.low <= best_first <= second.high
    assert math.log10(second.high / second.low) < math.log10(first.high / first.low)
    assert all(second.low <= t["params"]["optim.lr"] <= second.high for t in study.trials[100:])


def test_summary_json_holds_designs_keys(tmp_path: Path) -> None:
    config = {
        "search": {
            "space": {"optim.lr": "loguniform(1e-6, 1e-4)", "optim.mu": "default"},
            "stage": [{"epochs": 0.5, "trials": 30}, {"epochs": 2, "trials": 5}],
        }
    }
    seen: list[dict[str, Any]] = []

    class Collect(SearchCallback):
        def on_trial_end(self, record: dict[str, Any]) -> None:
            seen.append(record)

    study = babysit.search(
        config, objective=quadratic_in_log_lr(1.0), out=tmp_path / "s", progress=Collect()
    )
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert {"best", "stages", "border_warnings"} <= set(summary)
    assert set(summary["best"]) == {"params", "value", "trial"}
    assert set(summary["best"]["params"]) == {"optim.lr", "optim.mu"}
    assert [(s["epochs"], s["trials"]) for s in summary["stages"]] == [(0.5, 30), (2.0, 5)]
    assert summary["stages"][0]["ranges"] == {
        "optim.lr": "loguniform(1e-06, 0.0001)",
        "optim.mu": "choice(0.5, 0.9, 0.95, 0.99)",
    }
    assert summary["border_warnings"]
    for w in summary["border_warnings"]:
        assert {"param", "side", "value", "low", "high"} <= set(w) and w["side"] in ("low", "high")
    assert summary == json.loads(json.dumps(study.to_dict()))
    assert babysit.Study.from_dir(tmp_path / "s").to_dict() == study.to_dict()
    assert [t["number"] for t in seen] == list(range(35))


def test_random_search_tries_the_same_values_for_the_same_seed(tmp_path: Path) -> None:
    config = {
        "search": {
            "seed": 3,
            "space": {"optim.lr": "loguniform(1e-6, 1e1)", "model.dropout": "default"},
            "stage": [{"epochs": 1, "trials": 15}, {"epochs": 3, "trials": 5}],
        }
    }
    runs = [
        babysit.search(config, objective=quadratic_in_log_lr(1e-3), out=tmp_path / f"s{i}")
        for i in range(2)
    ]

    def tried(study: babysit.Study) -> list[dict[str, Any]]:
        return [{k: v for k, v in t.items() if k != "seconds"} for t in study.trials]

    assert tried(runs[0]) == tried(runs[1])
    config["search"]["seed"] = 4
    other = babysit.search(config, objective=quadratic_in_log_lr(1e-3), out=tmp_path / "s2")
    assert other.trials[0]["params"] != runs[0].trials[0]["params"]


@pytest.mark.parametrize(
    ("search", "needle"),
    [
        ({"space": {"optim.lr": "loguniform(1e-6"}}, "expected a distribution"),
        ({"space": {"optim.lr": "uniform(1, 1)"}}, "must be below high"),
        ({"space": {"optim.lr": "loguniform(0, 1)"}}, "a log range needs low > 0"),
        ({"space": {"optim.learning_rate": "loguniform(1e-6, 1)"}}, "unknown config key"),
        ({"stage": [{"epochs": 1, "trials": 0}]}, "search.stage.0.trials = 0"),
        ({"space": {}}, "search.space is empty"),
        ({"storage": "redis://localhost"}, "unknown storage 'redis'"),
    ],
)
def test_bad_input_is_one_line_and_nothing_is_written(
    tmp_path: Path, search: dict[str, Any], needle: str
) -> None:
    ran: list[int] = []
    with pytest.raises(ConfigError) as info:
        babysit.search(
            {"search": search}, objective=lambda p, r: ran.append(1) or 0.0, out=tmp_path / "s"
        )
    assert needle in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "s").exists() and ran == []


def test_a_model_value_the_model_refuses_is_bad_input(tmp_path: Path) -> None:
    config = {
        "task": {"name": "digits-mlp"},
        "search": {"space": {"model.hidden": "intuniform(16, 64)"}},  # hidden must be a list
    }
    with pytest.raises(ConfigError, match="hidden"):
        babysit.search(config, out=tmp_path / "s")
    assert not (tmp_path / "s").exists()


def test_a_non_empty_out_dir_is_refused(tmp_path: Path) -> None:
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "x").write_text("keep me")
    with pytest.raises(ConfigError, match="not empty"):
        babysit.search({}, objective=lambda p, r: 0.0, out=tmp_path / "s")


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_later_stages_draw_only_the_choices_kept_by_the_zoom(tmp_path: Path, sampler: str) -> None:
    config = {
        "search": {
            "sampler": sampler,
            "top_k": 4,
            "space": {"optim.mu": "default", "optim.lr": "loguniform(1e-4, 1e-1)"},
            "stage": [{"epochs": 1, "trials": 24}, {"epochs": 2, "trials": 12}],
        }
    }
    score = {0.5: 0.0, 0.9: 1.0, 0.95: 0.9, 0.99: 0.1}

    def objective(params: dict[str, Any], report: Any) -> float:
        return score[params["optim.mu"]] + 0.01 * math.log10(params["optim.lr"])

    study = babysit.search(config, objective=objective, out=tmp_path / "s")
    first = sorted((t for t in study.trials if t["stage"] == 0), key=lambda t: -t["value"])
    best_mus = {t["params"]["optim.mu"] for t in first[:4]}
    kept = parse_dimension(study.stages[1]["ranges"]["optim.mu"])
    assert isinstance(kept, Choice) and set(kept.choices) == best_mus and len(best_mus) < 4
    assert {t["params"]["optim.mu"] for t in study.trials if t["stage"] == 1} <= best_mus


def test_a_presampled_trial_is_written_with_its_params(tmp_path: Path) -> None:
    """The master's waiting trials carry their values: asking for them writes no param."""
    config = {
        "search": {
            "space": {"optim.lr": "loguniform(1e-6, 1e1)", "train.reg": "default"},
            "stage": [{"epochs": 1, "trials": 10}],
        }
    }
    study = babysit.search(config, objective=lambda p, r: r(1, 0.5), out=tmp_path / "s")
    lines = (study.dir / "journal.log").read_text().splitlines()
    ops = Counter(json.loads(line)["op_code"] for line in lines)
    assert ops[JournalOperation.SET_TRIAL_PARAM] == 0
    assert ops[JournalOperation.CREATE_TRIAL] == 10
    assert all(set(t["params"]) == {"optim.lr", "train.reg"} for t in study.trials)
