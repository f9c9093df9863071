"""The default objective: each trial a babysit.train run dir, scored by its best val epoch."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import optuna
import pytest

import babysit
from babysit.config import load_config
from babysit.monitor.log import read_metrics
from babysit.training.checkpoint import list_checkpoints
from babysit.tuning.objective import ReportEpochs, config_for
from babysit.tuning.trial import Reporter

from .conftest import load_journal


def _digits(space: dict[str, str], stages: list[dict[str, Any]], **train: Any) -> dict[str, Any]:
    return {
        "task": {"name": "digits-mlp"},
        "model": {"hidden": [32]},
        "train": {"seed": 0, "batch_size": 64, **train},
        "search": {"space": space, "stage": stages},
    }


def test_each_trial_is_a_run_dir_scored_by_its_best_validation_epoch(tmp_path: Path) -> None:
    config = _digits(
        {"optim.lr": "loguniform(1e-3, 1e-1)"},
        [{"epochs": 0.5, "trials": 2}, {"epochs": 2, "trials": 1}],
    )
    study = babysit.search(config, out=tmp_path / "s")
    assert [t["dir"] for t in study.trials] == ["trials/s0-0", "trials/s0-1", "trials/s1-2"]
    for t in study.trials:
        run_dir = study.dir / t["dir"]
        saved = tomllib.loads((run_dir / "config.toml").read_text())
        assert saved["optim"]["lr"] == t["params"]["optim.lr"]
        assert saved["train"]["epochs"] == (0.5 if t["stage"] == 0 else 2)
        assert list_checkpoints(run_dir / "checkpoints")  # val score in the file name
        records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
        epochs = [r for r in records if r["kind"] == "epoch"]
        assert t["value"] == max(e["val_acc"] for e in epochs)
        assert not any("test" in key for e in epochs for key in e)  # one validation fold
    assert study.best["trial"] == 2 and study.study["metric"] == "acc"


def test_a_diverging_trial_is_recorded_and_the_search_succeeds(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    config = _digits({"optim.lr": "choice(0.1, 1e4)"}, [{"epochs": 1, "trials": 4}])
    config["optim"] = {"rule": "sgd"}
    study = babysit.search(config, out=tmp_path / "s")
    states = {t["params"]["optim.lr"]: t["state"] for t in study.trials}
    assert states == {1e4: "diverged", 0.1: "complete"}
    assert study.best["params"] == {"optim.lr": 0.1}
    assert study.report == tmp_path / "s" / "report.html" and study.report.is_file()
    assert capfd.readouterr() == ("", "")  # the library prints nothing, Optuna included


@pytest.mark.slow
def test_digits_with_lr_below_its_optimum_warns_on_the_high_side(tmp_path: Path) -> None:
    """The issue's case: lr in [1e-6, 1e-4] for 1 epoch of Adam; the best sits at the top."""
    config = _digits({"optim.lr": "loguniform(1e-6, 1e-4)"}, [{"epochs": 1, "trials": 60}])
    study = babysit.search(config, out=tmp_path / "s")
    assert [(w["param"], w["side"]) for w in study.border_warnings] == [("optim.lr", "high")]


@pytest.mark.slow
def test_digits_with_lr_around_its_optimum_does_not_warn(tmp_path: Path) -> None:
    config = _digits({"optim.lr": "loguniform(1e-5, 1e1)"}, [{"epochs": 1, "trials": 30}])
    study = babysit.search(config, out=tmp_path / "s")
    assert study.border_warnings == []
    assert 1e-3 < study.best["params"]["optim.lr"] < 1.0


def test_every_epoch_is_reported_to_optuna(tmp_path: Path) -> None:
    config = _digits({"optim.lr": "loguniform(1e-3, 1e-1)"}, [{"epochs": 3, "trials": 2}])
    config["model"]["hidden"] = [16]
    study = babysit.search(config, out=tmp_path / "s")
    for trial in load_journal(study).trials:
        assert sorted(trial.intermediate_values) == [1, 2, 3]
        run_dir = study.dir / trial.user_attrs["dir"]
        epochs = [r for r in read_metrics(run_dir / "metrics.jsonl") if r["kind"] == "epoch"]
        assert [trial.intermediate_values[e["epoch"]] for e in epochs] == [
            e["val_acc"] for e in epochs
        ]


def test_a_half_epoch_stage_trains_half_an_epochs_steps(tmp_path: Path) -> None:
    config = _digits({"optim.lr": "loguniform(1e-3, 1e-1)"}, [{"epochs": 0.5, "trials": 1}])
    study = babysit.search(config, out=tmp_path / "s")
    run_dir = study.dir / study.trials[0]["dir"]
    records = list(read_metrics(run_dir / "metrics.jsonl"))
    batches = [r for r in records if r["kind"] == "batch"]
    per_epoch = -(-1079 // 64)  # digits' training split, batch_size 64: 17 steps
    assert len(batches) == round(per_epoch / 2)
    assert len([r for r in records if r["kind"] == "epoch"]) == 1
    assert sorted(load_journal(study).trials[0].intermediate_values) == [1]


class _AlwaysPrune(optuna.pruners.BasePruner):
    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return True


def test_a_pruned_trial_stops_its_run_cleanly(tmp_path: Path) -> None:
    config = load_config(_digits({}, [{"epochs": 3, "trials": 1}]) | {"search": {}})
    study = optuna.create_study(direction="maximize", pruner=_AlwaysPrune())
    report = Reporter(study.ask(), epochs=3, direction="max")
    cfg = config_for(config, {}, epochs=3)
    run = babysit.train(cfg, out=tmp_path / "r", quiet=True, callbacks=[ReportEpochs(report)])
    assert run.stopped == "pruned" and report.ended == "pruned" and not run.diverged
    assert [c.epoch for c in list_checkpoints(run.dir / "checkpoints")] == [1]


def test_a_pruned_trial_stops_training_after_that_epoch(tmp_path: Path) -> None:
    config = _digits({"optim.lr": "choice(0.01, 1e-6)"}, [{"epochs": 3, "trials": 12}])
    config["search"]["pruner"] = "median"
    study = babysit.search(config, out=tmp_path / "s")
    pruned = [t for t in study.trials if t["state"] == "pruned"]
    assert pruned and all(t["params"]["optim.lr"] == 1e-6 for t in pruned)
    for t in pruned:
        records = (study.dir / t["dir"] / "metrics.jsonl").read_text().splitlines()
        epochs = [json.loads(x) for x in records if json.loads(x)["kind"] == "epoch"]
        assert len(epochs) < 3 and t["value"] == epochs[-1]["val_acc"]
