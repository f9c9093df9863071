"""The Optuna study: storages by URL, samplers and pruners by name, read back by Optuna alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest

from babysit.config import load_config
from babysit.errors import ConfigError
from babysit.tuning.master import search
from babysit.tuning.study import (
    HEARTBEAT,
    PRUNERS,
    SAMPLERS,
    open_storage,
    open_study,
    storage_url,
)

from .conftest import load_journal, quadratic_in_log_lr


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_every_sampler_is_an_optuna_sampler(name: str) -> None:
    assert isinstance(SAMPLERS[name](0), optuna.samplers.BaseSampler)


@pytest.mark.parametrize("name", list(PRUNERS))
def test_every_pruner_is_an_optuna_pruner(name: str) -> None:
    assert isinstance(PRUNERS[name](), optuna.pruners.BasePruner)


def test_storage_defaults_to_the_journal_file_in_the_study_dir(tmp_path: Path) -> None:
    assert storage_url(None, tmp_path) == f"journal://{tmp_path.resolve()}/journal.log"
    assert storage_url("sqlite:///x.db", tmp_path) == "sqlite:///x.db"
    assert storage_url("postgresql+psycopg2://u@h/db", tmp_path).startswith("postgresql")


@pytest.mark.parametrize(
    ("url", "needle"),
    [("mysql://u@h/db", "unknown storage 'mysql'"), ("study.db", "expected a URL")],
)
def test_unknown_storage_is_one_line(tmp_path: Path, url: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        storage_url(url, tmp_path)


def test_optuna_reads_the_journal_study_with_every_trial(
    tmp_path: Path, search_config: dict[str, Any]
) -> None:
    search_config["search"]["stage"] = [{"epochs": 1, "trials": 7}, {"epochs": 2, "trials": 5}]
    study = search(search_config, objective=quadratic_in_log_lr(1e-3), out=tmp_path / "s")
    loaded = load_journal(study)
    assert len(loaded.trials) == 12 == len(study.trials)
    assert loaded.direction == optuna.study.StudyDirection.MAXIMIZE
    best_stage_1 = max(
        (t for t in loaded.trials if t.user_attrs["stage"] == 1), key=lambda t: t.value
    )
    assert study.best == {
        "params": best_stage_1.params,
        "value": best_stage_1.value,
        "trial": best_stage_1.number,
    }


def test_a_worker_finds_config_and_dir_from_url_and_name(
    tmp_path: Path, search_config: dict[str, Any]
) -> None:
    search_config["search"] |= {
        "storage": f"sqlite:///{tmp_path / 'study.db'}",
        "stage": [{"epochs": 1, "trials": 4}],
    }
    study = search(search_config, objective=quadratic_in_log_lr(1e-3), out=tmp_path / "s")
    assert not (tmp_path / "s" / "journal.log").exists()
    url, name = study.study["storage"], study.study["name"]
    loaded, config, info = open_study(open_storage(url), url=url, name=name)
    assert config == load_config(search_config)
    assert Path(info["dir"]) == (tmp_path / "s").resolve()
    assert len(loaded.trials) == 4
    assert isinstance(loaded.sampler, optuna.samplers.RandomSampler)
    assert len(optuna.load_study(study_name=name, storage=url).trials) == 4


def test_open_study_with_a_wrong_name_is_one_line(
    tmp_path: Path, search_config: dict[str, Any]
) -> None:
    study = search(search_config, objective=quadratic_in_log_lr(1e-3), out=tmp_path / "s")
    with pytest.raises(ConfigError, match="no study named 'nope'"):
        url = study.study["storage"]
        open_study(open_storage(url), url=url, name="nope")


@pytest.mark.parametrize("sampler", ["tpe", "gp"])
def test_adaptive_samplers_are_seeded(
    tmp_path: Path, search_config: dict[str, Any], sampler: str
) -> None:
    search_config["search"] |= {"sampler": sampler, "stage": [{"epochs": 1, "trials": 12}]}
    runs = [
        search(search_config, objective=quadratic_in_log_lr(1e-3), out=tmp_path / f"s{i}")
        for i in range(2)
    ]
    a, b = ([t["params"]["optim.lr"] for t in r.trials] for r in runs)
    assert a == b and len(set(a)) == 12


def test_a_database_storage_fails_silent_trials_and_requeues_them_once(tmp_path: Path) -> None:
    storage = open_storage(f"sqlite:///{tmp_path / 'study.db'}")
    assert isinstance(storage, optuna.storages.RDBStorage)
    assert storage.get_heartbeat_interval() == HEARTBEAT
    retry = storage.get_heartbeat_stale_trial_callback()
    assert retry is not None
    study = optuna.create_study(storage=storage)
    study.add_trial(optuna.create_trial(state=optuna.trial.TrialState.FAIL))
    retry(study, study.trials[0])  # re-queued once ...
    assert [t.state.name for t in study.trials] == ["FAIL", "WAITING"]
    retry(study, study.trials[1])  # ... and its retry not again
    assert len(study.trials) == 2
