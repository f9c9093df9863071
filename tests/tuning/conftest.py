"""Helpers for the search tests: small studies on trivial objectives."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import optuna
import pytest
from optuna.storages.journal import JournalFileBackend, JournalStorage
from tests.tuning.postgres import pg_server, pg_url  # noqa: F401 (a real PostgreSQL server)

from babysit.tuning.summary import Study


def quadratic_in_log_lr(best_lr: float) -> Callable[[dict[str, Any], Any], float]:
    """A score that peaks at ``best_lr``: -(log10 lr - log10 best_lr) ** 2."""

    def objective(params: dict[str, Any], report: Any) -> float:
        return -((math.log10(params["optim.lr"]) - math.log10(best_lr)) ** 2)

    return objective


def load_journal(study: Study) -> optuna.Study:
    """The study read back with Optuna alone, from the journal file in the study dir."""
    storage = JournalStorage(JournalFileBackend(str(study.dir / "journal.log")))
    return optuna.load_study(study_name=study.study["name"], storage=storage)


@pytest.fixture
def search_config() -> dict[str, Any]:
    return {
        "search": {
            "space": {"optim.lr": "loguniform(1e-6, 1e1)"},
            "stage": [{"epochs": 1, "trials": 20}],
        }
    }
