"""The storage's retry: which errors, how long between tries, when it gives up, and the
calls whose answer was lost (the server died after committing)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import optuna
import pytest
import sqlalchemy.exc
from optuna.storages import RDBStorage
from optuna.trial import TrialState, create_trial

from babysit.errors import ConfigError
from babysit.tuning._rdb import RetryingRDBStorage
from babysit.tuning._retry import (
    BACKOFF_CAP,
    BACKOFF_FIRST,
    StorageUnavailable,
    env_seconds,
    is_transient,
    retry_call,
    safe_url,
)


class _PgError(Exception):
    """Stands for psycopg2's errors: a SQLSTATE in ``pgcode`` (None: no server answer)."""

    def __init__(self, message: str, pgcode: str | None) -> None:
        super().__init__(message)
        self.pgcode = pgcode


def _operational(pgcode: str | None, message: str = "server closed the connection") -> Exception:
    return sqlalchemy.exc.OperationalError("SELECT 1", {}, _PgError(message, pgcode))


def _sqlite(message: str) -> Exception:
    return sqlalchemy.exc.OperationalError("", {}, sqlite3.OperationalError(message))


def _wrapped(inner: Exception) -> Exception:
    """As Optuna raises it: StorageInternalError from the SQLAlchemy error."""
    try:
        raise optuna.exceptions.StorageInternalError("during the commit") from inner
    except optuna.exceptions.StorageInternalError as exc:
        return exc


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (_operational(None), True),  # connection refused / closed: no SQLSTATE
        (_operational("57P01"), True),  # terminating connection due to administrator command
        (_operational("57P03"), True),  # the database system is starting up
        (_operational("08006"), True),  # connection failure
        (_wrapped(_operational(None)), True),
        (_operational("28P01", "password authentication failed"), False),
        (_operational("3D000", 'database "x" does not exist'), False),
        (
            sqlalchemy.exc.OperationalError("", {}, sqlite3.OperationalError("database is locked")),
            True,
        ),
        (
            sqlalchemy.exc.OperationalError("", {}, sqlite3.OperationalError("unable to open")),
            False,
        ),
        (_wrapped(sqlalchemy.exc.PendingRollbackError("roll back first")), True),
        (
            _wrapped(sqlalchemy.exc.IntegrityError("", {}, _PgError("duplicate key", "23505"))),
            False,
        ),
        (ValueError("not the database"), False),
    ],
)
def test_only_connection_errors_are_transient(error: Exception, transient: bool) -> None:
    assert is_transient(error) is transient


class _Clock:
    """A clock that advances only by the sleeps: the retry's waits, exactly."""

    def __init__(self) -> None:
        self.now = 0.0
        self.waits: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds


def _failing(times: int, error: Exception) -> Any:
    calls = {"n": 0}

    def call() -> str:
        calls["n"] += 1
        if calls["n"] <= times:
            raise error
        return "done"

    return call, calls


def test_the_waits_double_from_the_first_up_to_the_cap_with_jitter() -> None:
    clock = _Clock()
    call, calls = _failing(7, _operational(None))
    got = retry_call(call, patience=None, url="u", sleep=clock.sleep, clock=lambda: clock.now)
    assert got == "done" and calls["n"] == 8
    for k, wait in enumerate(clock.waits):
        nominal = min(BACKOFF_CAP, BACKOFF_FIRST * 2**k)
        assert nominal / 2 <= wait <= nominal  # jitter: u in [0.5, 1)
    assert clock.waits[-1] >= BACKOFF_CAP / 2  # 0.5 * 2**6 = 32 s is capped to 10 s


def test_a_call_gives_up_after_the_patience_with_one_line() -> None:
    clock = _Clock()
    call, _ = _failing(10**6, _wrapped(_operational(None, "connection refused")))
    url = safe_url("postgresql+psycopg2://alice:s3cret@db:5432/babysit")
    with pytest.raises(StorageUnavailable) as caught:
        retry_call(call, patience=30, url=url, sleep=clock.sleep, clock=lambda: clock.now)
    assert clock.now == pytest.approx(30)  # the last wait ends at the patience, not past it
    line = str(caught.value)
    assert "\n" not in line and "s3cret" not in line and "alice:***@db:5432" in line
    assert "has not answered for 30 s" in line and "connection refused" in line
    assert "--resume" in line and "BABYSIT_STORAGE_PATIENCE=30" in line


def test_a_request_error_is_not_retried() -> None:
    call, calls = _failing(1, _operational("28P01", "password authentication failed"))
    with pytest.raises(sqlalchemy.exc.OperationalError):
        retry_call(call, patience=None, url="u", sleep=lambda s: None)
    assert calls["n"] == 1


def test_env_seconds_reads_a_positive_number(monkeypatch: pytest.MonkeyPatch) -> None:
    assert env_seconds("BABYSIT_TEST_SECONDS", 7.0) == 7.0
    monkeypatch.setenv("BABYSIT_TEST_SECONDS", "2.5")
    assert env_seconds("BABYSIT_TEST_SECONDS", 7.0) == 2.5
    for bad in ("0", "-1", "soon", "nan"):
        monkeypatch.setenv("BABYSIT_TEST_SECONDS", bad)
        with pytest.raises(ConfigError, match="BABYSIT_TEST_SECONDS"):
            env_seconds("BABYSIT_TEST_SECONDS", 7.0)


# --- the server died after committing: the retry finds the work done ----------------------
def _lose_the_answer_once(monkeypatch: pytest.MonkeyPatch, name: str) -> dict[str, int]:
    """RDBStorage.<name> commits, then (the first time) raises as a lost connection would."""
    real = getattr(RDBStorage, name)
    calls = {"n": 0}

    def commit_then_fail(self: RDBStorage, *args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        result = real(self, *args, **kwargs)
        if calls["n"] == 1:
            raise _wrapped(_operational(None))
        return result

    monkeypatch.setattr(RDBStorage, name, commit_then_fail)
    return calls


def _storage(tmp_path: Path) -> tuple[RetryingRDBStorage, int]:
    storage = RetryingRDBStorage(f"sqlite:///{tmp_path / 'study.db'}", patience=60)
    study_id = storage.create_new_study([optuna.study.StudyDirection.MAXIMIZE], "s")
    return storage, study_id


@pytest.mark.parametrize("taken", [False, True])
def test_a_trial_created_before_the_answer_was_lost_is_not_created_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, taken: bool
) -> None:
    """``taken``: a worker took the new trial (RUNNING, its owner stamped) before the retry."""
    storage, study_id = _storage(tmp_path)
    template = create_trial(state=TrialState.WAITING, user_attrs={"stage": 0, "slot": 3})
    real = RDBStorage._create_new_trial
    calls = {"n": 0}

    def commit_then_fail(self: RDBStorage, *args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        made = real(self, *args, **kwargs)
        if taken:
            RDBStorage.set_trial_state_values(self, made._trial_id, TrialState.RUNNING)
            RDBStorage.set_trial_user_attr(self, made._trial_id, "worker", {"pid": 1, "trial": 0})
        raise _wrapped(_operational(None))

    monkeypatch.setattr(RDBStorage, "_create_new_trial", commit_then_fail)
    storage.create_new_trial(study_id, template)
    assert calls["n"] == 1  # recovered, not run again
    trials = RDBStorage.get_all_trials(storage, study_id)
    assert len(trials) == 1 and trials[0].user_attrs["slot"] == 3


def test_a_trial_told_complete_before_the_answer_was_lost_counts_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage, study_id = _storage(tmp_path)
    trial_id = storage.create_new_trial(study_id)
    calls = _lose_the_answer_once(monkeypatch, "set_trial_state_values")
    assert storage.set_trial_state_values(trial_id, TrialState.COMPLETE, [0.5]) is True
    assert calls["n"] == 1
    assert storage.get_trial(trial_id).state == TrialState.COMPLETE


def test_a_lost_fail_is_not_taken_for_this_process_s_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A FAIL found after a lost answer may be another process's (the heartbeat sweep):
    the retry asks the database again, which refuses, so the re-queue is not repeated."""
    storage, study_id = _storage(tmp_path)
    trial_id = storage.create_new_trial(study_id)
    _lose_the_answer_once(monkeypatch, "set_trial_state_values")
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        storage.set_trial_state_values(trial_id, TrialState.FAIL)
