"""A ``mode = "pbt"`` search stage: checked, its lineage in the study, and better than no PBT."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import babysit
from babysit.errors import ConfigError
from babysit.monitor.log import read_metrics

from .conftest import load_journal


def _digits(space: dict[str, str], stages: list[dict[str, Any]], **search: Any) -> dict[str, Any]:
    return {
        "task": {"name": "digits-mlp"},
        "model": {"hidden": [8]},
        "optim": {"rule": "sgd"},
        "train": {"seed": 0, "batch_size": 64, "report": False},
        "search": {"space": space, "stage": stages, **search},
    }


LR = {"optim.lr": "loguniform(1e-3, 1e-1)"}


def _objective(params: dict[str, Any], report: Any) -> float:
    return 0.0


@pytest.mark.parametrize(
    ("space", "stage", "pbt", "kwargs", "why"),
    [
        (LR, {"executor": "trainer"}, {}, {}, "executor = 'trainer' cannot; fix: executor"),
        (LR, {"epochs": 2}, {"every": 2}, {}, "epochs = 2 never exploits"),
        (LR, {"epochs": 2.5}, {}, {}, "epochs = 2.5: a population trains whole epochs"),
        (LR, {}, {}, {"workers": 2}, "workers = 2: a population trains in the master's"),
        (LR, {}, {}, {"objective": _objective}, "a user objective trains its trials itself"),
        ({"model.hidden": "choice([8], [16])"}, {}, {}, {}, "[search.space] (e.g. optim.lr"),
        (LR, {}, {"quantile": 0.7}, {}, "search.pbt.quantile = 0.7 is invalid"),
        (LR, {}, {"perturb": [0.8, 0]}, {}, "each factor must be a finite number > 0"),
        (LR, {}, {"every": 0}, {}, "search.pbt.every = 0 is invalid"),
    ],
)
def test_a_pbt_stage_that_cannot_run_is_one_config_error_before_anything_is_written(
    tmp_path: Path,
    space: dict[str, str],
    stage: dict[str, Any],
    pbt: dict[str, Any],
    kwargs: dict[str, Any],
    why: str,
) -> None:
    config = _digits(space, [{"epochs": 3, "trials": 4, "mode": "pbt", **stage}], pbt=pbt)
    with pytest.raises(ConfigError) as info:
        babysit.search(config, out=tmp_path / "s", **kwargs)
    assert why in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "s").exists()


def _value_at(trials: dict[int, dict[str, Any]], number: int, epoch: int) -> dict[str, float]:
    """Trial ``number``'s explored values during ``epoch`` (after its earlier copies)."""
    values = dict(trials[number]["params"])
    for e in trials[number]["pbt_lineage"]:
        if e["epoch"] < epoch:
            values = e["after"]
    return values


def test_lineage_round_trips_into_the_study_summary_metrics_and_report(tmp_path: Path) -> None:
    space = {**LR, "train.reg": "loguniform(1e-5, 1e-3)", "model.hidden": "choice([8])"}
    config = _digits(space, [{"epochs": 3, "trials": 8, "mode": "pbt"}])
    study = babysit.search(config, out=tmp_path / "s")
    summary = json.loads((study.dir / "summary.json").read_text())
    assert summary["stages"][0]["mode"] == "pbt"
    trials = {t["number"]: t for t in summary["trials"]}
    events = 0
    for number, t in trials.items():
        assert t["state"] == "complete"
        values = {k: v for k, v in t["params"].items() if k != "model.hidden"}  # not explored
        exploits = [
            r
            for r in read_metrics(study.dir / t["dir"] / "metrics.jsonl")
            if r.get("what") == "exploit"
        ]
        assert len(exploits) == len(t["pbt_lineage"])
        for e, record in zip(t["pbt_lineage"], exploits, strict=True):
            events += 1
            assert e["epoch"] in (1, 2) and record["epoch"] == e["epoch"]  # not after epoch 3
            assert e["source_trial"] in set(trials) - {number}
            assert record["source_dir"] == f"s0-{e['source_trial']}"
            assert e["before"] == pytest.approx(values)
            source = _value_at(trials, e["source_trial"], e["epoch"])
            for key, value in e["after"].items():
                if key in e["resampled"]:
                    low, high = (1e-3, 1e-1) if key == "optim.lr" else (1e-5, 1e-3)
                    assert low <= value <= high
                else:
                    assert round(value / source[key], 9) in (0.8, 1.2)
            values = e["after"]
        assert t["final_params"] == pytest.approx(values)
    assert events == 2 * 2  # two exploit steps, each the worst floor(0.25 * 8) = 2
    for t in load_journal(study).trials:  # the same records in Optuna's storage
        assert t.user_attrs["pbt_lineage"] == trials[t.number]["pbt_lineage"]
        assert t.user_attrs["final_params"] == trials[t.number]["final_params"]
        assert sorted(t.intermediate_values) == [1, 2, 3]
    best = summary["best"]
    assert best["final_params"] == trials[best["trial"]]["final_params"]
    page = babysit.write_report(study.dir).read_text()
    section = page[page.index('<section id="pbt">') :].split("</section>")[0]
    assert section.count("<tr>") == 1 + events and 'id="fig-pbt"' in section


@pytest.mark.slow
def test_pbt_beats_the_same_population_without_exploitation_from_a_poor_lr_range(
    tmp_path: Path,
) -> None:
    """The issue's test: sgd's lr drawn from loguniform(1e-3, 3e-2), mostly far below the
    digits MLP's best (about 1): the same 16 trials (same seeds, same values) trained
    without exploitation end at about 0.87 validation accuracy at best; with PBT, copies
    of the best members carry their weights on at perturbed, mostly higher, lrs."""
    space = {"optim.lr": "loguniform(1e-3, 3e-2)"}
    best: dict[str, float] = {}
    finals: list[float] = []
    for mode in ("independent", "pbt"):
        config = _digits(space, [{"epochs": 20, "trials": 16, "mode": mode}], seed=0)
        config["model"] = {"hidden": [32]}
        study = babysit.search(config, out=tmp_path / mode)
        assert {s["executor"] for s in study.stages} == {"population"}
        best[mode] = study.best["value"]
        finals = sorted(t.get("final_params", {}).get("optim.lr", 0.0) for t in study.trials)
    # measured: 0.866 -> 0.916 here (search.seed 0), 0.877 -> 0.939 with seed 1
    assert best["pbt"] > best["independent"] + 0.03
    assert finals[len(finals) // 2] > 3e-2  # most of the population left the poor range
