"""One trial's end: complete at the stage's epochs, pruned with its last score, diverged."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from babysit.tuning.master import search

from .conftest import load_journal


def _config(trials: int, epochs: float = 5, **search: Any) -> dict[str, Any]:
    space = {"optim.lr": "loguniform(1e-4, 1e-1)"}
    stage = [{"epochs": epochs, "trials": trials}]
    return {"search": {"space": space, "stage": stage, **search}}


def test_report_stops_the_objective_at_the_stages_epochs(tmp_path: Path) -> None:
    seen: list[list[int]] = []

    def objective(params: dict[str, Any], report: Any) -> float:
        epochs: list[int] = []
        seen.append(epochs)
        for epoch in range(1, 21):  # the user's loop would train 20 epochs
            epochs.append(epoch)
            report(epoch, epoch / 10 if epoch != 2 else 0.95)
        return -1.0  # never reached

    study = search(_config(3, epochs=3), objective=objective, out=tmp_path / "s")
    assert seen == [[1, 2, 3]] * 3
    assert [t["value"] for t in study.trials] == [0.95] * 3  # the best report, not the last
    assert all(t["state"] == "complete" for t in study.trials)


def test_a_fraction_of_an_epoch_stops_at_the_first_report(tmp_path: Path) -> None:
    calls: list[float] = []

    def objective(params: dict[str, Any], report: Any) -> float:
        for epoch in (0.25, 0.5, 0.75, 1.0):
            calls.append(epoch)
            report(epoch, epoch)
        return 0.0

    study = search(_config(1, epochs=0.5), objective=objective, out=tmp_path / "s")
    assert calls == [0.25, 0.5] and study.best["value"] == 0.5


def test_median_pruner_stops_a_hopeless_trial_and_keeps_its_last_score(tmp_path: Path) -> None:
    calls = {"n": 0}
    reports: dict[int, list[int]] = {}

    def objective(params: dict[str, Any], report: Any) -> float:
        calls["n"] += 1
        n = calls["n"]
        hopeless = n == 7  # after the pruner's 5 startup trials
        reports[n] = []
        for epoch in range(1, 6):
            reports[n].append(epoch)
            report(epoch, 0.01 * epoch if hopeless else 0.5 + 0.05 * epoch + 0.001 * n)
        return 0.0

    study = search(_config(8, pruner="median"), objective=objective, out=tmp_path / "s")
    states = [t["state"] for t in study.trials]
    assert states == ["complete"] * 6 + ["pruned", "complete"]
    pruned = study.trials[6]
    assert reports[7] == [1] and pruned["value"] == pytest.approx(0.01)
    frozen = load_journal(study).trials[6]
    assert frozen.state.name == "PRUNED" and frozen.value == pytest.approx(0.01)
    assert frozen.user_attrs["last_score"] == pytest.approx(0.01)


def test_without_a_pruner_the_hopeless_trial_runs_to_the_end(tmp_path: Path) -> None:
    def objective(params: dict[str, Any], report: Any) -> float:
        for epoch in range(1, 6):
            report(epoch, 0.0)
        return 0.0

    study = search(_config(8), objective=objective, out=tmp_path / "s")
    assert all(t["state"] == "complete" for t in study.trials)


def test_diverged_trials_are_recorded_and_the_search_succeeds(tmp_path: Path) -> None:
    def objective(params: dict[str, Any], report: Any) -> float:
        lr = params["optim.lr"]
        if lr > 1e-2:
            report(1, math.inf)  # the loss blew up during epoch 1
            raise AssertionError("report() stops a diverged trial")
        if lr > 3e-3:
            return math.nan  # the user's loop returned a NaN score
        report(1, -lr)
        return -lr

    study = search(_config(30), objective=objective, out=tmp_path / "s")
    by_state: dict[str, list[dict[str, Any]]] = {}
    for t in study.trials:
        by_state.setdefault(t["state"], []).append(t)
    assert set(by_state) == {"complete", "diverged"}
    assert all(t["params"]["optim.lr"] > 3e-3 for t in by_state["diverged"])
    assert study.best["params"]["optim.lr"] <= 3e-3
    frozen = {t.number: t for t in load_journal(study).trials}
    for t in by_state["diverged"]:
        assert frozen[t["number"]].state.name == "FAIL"
        assert frozen[t["number"]].user_attrs["diverged"] is True
    summary = json.loads((study.dir / "summary.json").read_text())
    assert {s for s in summary["stages"][0]["counts"]} == {"complete", "diverged"}


def test_an_error_in_the_objective_fails_the_trial_and_is_raised(tmp_path: Path) -> None:
    def objective(params: dict[str, Any], report: Any) -> float:
        raise RuntimeError("bug in the user's loop")

    with pytest.raises(RuntimeError, match="bug in the user's loop"):
        search(_config(3), objective=objective, out=tmp_path / "s")


def test_an_objective_that_returns_nothing_is_a_type_error(tmp_path: Path) -> None:
    def objective(params: dict[str, Any], report: Any) -> Any:
        return None

    with pytest.raises(TypeError, match="return the validation score"):
        search(_config(3), objective=objective, out=tmp_path / "s")
