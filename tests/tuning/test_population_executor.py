"""The population executor: a stage's trials trained at once, told as the trainer's would be."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

import babysit
from babysit.config import load_config
from babysit.errors import ConfigError
from babysit.tuning.population_executor import executors
from babysit.tuning.space import parse_space

from .conftest import load_journal


def _digits(space: dict[str, str], stages: list[dict[str, Any]], **search: Any) -> dict[str, Any]:
    return {
        "task": {"name": "digits-mlp"},
        "model": {"hidden": [8]},
        "optim": {"rule": "sgd"},
        "train": {"seed": 0, "batch_size": 64},
        "search": {"space": space, "stage": stages, **search},
    }


def _executed(study: babysit.Study) -> set[str]:
    return {t.user_attrs["executor"] for t in load_journal(study).trials}


def test_population_and_trainer_give_the_same_trials_and_scores(tmp_path: Path) -> None:
    space = {"optim.lr": "loguniform(1e-3, 1e-1)", "train.reg": "loguniform(1e-5, 1e-2)"}
    studies = {
        ex: babysit.search(
            _digits(space, [{"epochs": 2, "trials": 8, "executor": ex}]), out=tmp_path / ex
        )
        for ex in ("population", "trainer")
    }
    pop, trainer = studies["population"], studies["trainer"]
    assert _executed(pop) == {"population"} and _executed(trainer) == {"trainer"}
    assert [t["params"] for t in pop.trials] == [t["params"] for t in trainer.trials]
    assert [t["state"] for t in pop.trials] == ["complete"] * 8
    for a, b in zip(pop.trials, trainer.trials, strict=True):
        assert a["value"] == pytest.approx(b["value"], abs=1e-4)
    by_number = {t.number: t for t in load_journal(trainer).trials}
    for t in load_journal(pop).trials:
        assert sorted(t.intermediate_values) == [1, 2]
        for step, value in t.intermediate_values.items():
            assert value == pytest.approx(by_number[t.number].intermediate_values[step], abs=1e-4)
        assert t.user_attrs["dir"] == f"trials/s0-{t.number}" and t.user_attrs["epochs"] == 2
    assert not (pop.dir / "trials" / "population.json").exists()


def test_a_diverging_member_is_recorded_and_the_others_complete(tmp_path: Path) -> None:
    config = _digits({"optim.lr": "choice(0.1, 1e4)"}, [{"epochs": 1, "trials": 8}])
    study = babysit.search(config, out=tmp_path / "s")
    assert _executed(study) == {"population"}
    states = {t["params"]["optim.lr"]: t["state"] for t in study.trials}
    assert states == {1e4: "diverged", 0.1: "complete"}
    for t in load_journal(study).trials:
        if t.params["optim.lr"] == 1e4:
            assert t.user_attrs["diverged"] is True and "last_score" in t.user_attrs
            stopped = [
                json.loads(line)
                for line in (study.dir / t.user_attrs["dir"] / "metrics.jsonl")
                .read_text()
                .splitlines()
            ]
            assert any(r.get("kind") != "epoch" for r in stopped)
    assert study.best["params"] == {"optim.lr": 0.1}


def test_a_median_pruner_prunes_through_the_epoch_hook(tmp_path: Path) -> None:
    config = _digits({"optim.lr": "choice(0.05, 1e-6)"}, [{"epochs": 3, "trials": 16}])
    config["search"]["pruner"] = "median"
    study = babysit.search(config, out=tmp_path / "s")
    assert _executed(study) == {"population"}
    pruned = [t for t in study.trials if t["state"] == "pruned"]
    assert pruned and all(t["params"]["optim.lr"] == 1e-6 for t in pruned)
    assert all(t["number"] >= 8 for t in pruned)  # the first wave finished unpruned
    for t in pruned:
        lines = (study.dir / t["dir"] / "metrics.jsonl").read_text().splitlines()
        epochs = [json.loads(x) for x in lines if json.loads(x)["kind"] == "epoch"]
        assert len(epochs) < 3 and t["value"] == epochs[-1]["val_acc"]


def test_summary_and_the_study_report_read_a_population_study(tmp_path: Path) -> None:
    config = _digits(
        {"optim.lr": "loguniform(1e-3, 1e-1)"},
        [{"epochs": 1, "trials": 8}, {"epochs": 2, "trials": 4}],
    )
    study = babysit.search(config, out=tmp_path / "s")
    summary = json.loads((study.dir / "summary.json").read_text())
    assert len(summary["trials"]) == 12 and summary["best"]["trial"] is not None
    assert [s["executor"] for s in study.stages] == ["population", "population"]
    page = babysit.write_report(study.dir)
    assert page.is_file() and page.stat().st_size > 0


@pytest.mark.parametrize(
    ("stage", "optim", "why"),
    [
        ({"epochs": 0.5}, {}, "epochs = 0.5: a population trains whole epochs"),
        ({"epochs": 1}, {"rule": "lbfgs"}, "optim.rule = 'lbfgs' has no pure update rule"),
    ],
)
def test_a_population_stage_it_cannot_run_is_one_config_error(
    tmp_path: Path, stage: dict[str, Any], optim: dict[str, Any], why: str
) -> None:
    config = _digits({"optim.lr": "loguniform(1e-3, 1e-1)"}, [{**stage, "executor": "population"}])
    config["optim"] = optim
    with pytest.raises(ConfigError, match="executor = 'population' cannot run it") as info:
        babysit.search(config, out=tmp_path / "s")
    assert why in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "s").exists()


def test_auto_picks_the_population_for_a_plain_search_and_the_trainer_otherwise(
    tmp_path: Path,
) -> None:
    space = {"optim.lr": "loguniform(1e-3, 1e-1)"}
    plain = babysit.search(_digits(space, [{"epochs": 1, "trials": 8}]), out=tmp_path / "a")
    assert _executed(plain) == {"population"}
    fraction = babysit.search(_digits(space, [{"epochs": 0.5, "trials": 2}]), out=tmp_path / "b")
    assert _executed(fraction) == {"trainer"}
    assert all(math.isfinite(t["value"]) for t in fraction.trials)


@pytest.mark.parametrize(
    ("train", "space"),
    [({"ema": 0.999}, {}), ({"swa": True}, {}), ({}, {"train.ema": "choice(0, 0.99)"})],
)
def test_a_search_that_averages_weights_is_left_to_the_trainer(
    train: dict[str, Any], space: dict[str, str]
) -> None:
    """The population keeps no running average (train.ema / train.swa): the trainer does."""
    data = _digits({"optim.lr": "loguniform(1e-3, 1e-1)", **space}, [{"epochs": 2}])
    data["train"].update(train)
    config = load_config(data)
    assert executors(config, parse_space(config), builtin=True, workers=1) == ["trainer"]
    config.search.stage[0].executor = "population"
    with pytest.raises(ConfigError, match="a population does not average weights"):
        executors(config, parse_space(config), builtin=True, workers=1)
