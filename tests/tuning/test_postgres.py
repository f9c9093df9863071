"""The search on a real PostgreSQL server (tests/tuning/postgres.py starts one).

Four worker processes on one study, a worker frozen then SIGKILLed (its trial re-queued
once by Optuna's heartbeat), and the server restarted or stopped under a running search
(the storage's calls retry with backoff: tuning/_retry.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState
from tests.tuning.polling import running_a_while, wait_for
from tests.tuning.postgres import PostgresServer  # the fixtures: conftest.py

import babysit
from babysit.tuning.slots import owner_of
from babysit.tuning.study import StorageUnavailable, open_storage, quiet_optuna

HERE = Path(__file__).resolve().parent
SRC = Path(babysit.__file__).resolve().parents[1]


def _config(tmp_path: Path, trials: list[int], *, delay: float = 0.1) -> Path:
    """digits-mlp with a ``delay`` s sleep per step (0.1: a 1-epoch trial takes about 2 s),
    one 1-epoch stage per entry of ``trials``."""
    path = tmp_path / "search.toml"
    stages = "".join(f"[[search.stage]]\nepochs = 1\ntrials = {n}\n" for n in trials)
    path.write_text(
        f"""
[task]
name = "{HERE / "slow_task.py"}:slow_digits"
options = {{delay = {delay}}}
[model]
hidden = [16]
[train]
report = false
[search]
seed = 1
[search.space]
"optim.lr" = "loguniform(1e-3, 1e-1)"
"""
        + stages
    )
    return path


def _babysit(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "babysit", *map(str, args)],
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
            **(env or {}),
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _trials(url: str, name: str) -> list[FrozenTrial]:
    """The study's trials read with Optuna alone ([] before the master made it)."""
    with quiet_optuna():
        storage = optuna.storages.RDBStorage(url)
        try:
            return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
        except KeyError:
            return []
        finally:
            storage.engine.dispose()


def _one_done_one_running(trials: list[FrozenTrial]) -> bool:
    return any(t.state == TrialState.COMPLETE for t in trials) and running_a_while(trials)


def _check_slots(trials: list[FrozenTrial], per_stage: list[int]) -> None:
    """Every slot of every stage complete exactly once; nothing left running or waiting."""
    for stage, n in enumerate(per_stage):
        done = [
            t for t in trials if t.user_attrs["stage"] == stage and t.state == TrialState.COMPLETE
        ]
        assert sorted(t.user_attrs["slot"] for t in done) == list(range(n))
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]


def _check_summary(out: Path, trials: list[FrozenTrial]) -> babysit.Study:
    """summary.json says what the storage holds: the same trials, states and values."""
    summary = babysit.Study.from_dir(out)
    by_number = {t["number"]: t for t in summary.trials}
    assert sorted(by_number) == sorted(t.number for t in trials)
    for t in trials:
        record = by_number[t.number]
        assert record["state"] == ("complete" if t.state == TrialState.COMPLETE else "lost")
        if t.state == TrialState.COMPLETE:
            assert record["value"] == t.value
    for s, stage in enumerate(summary.stages):
        states = Counter(by_number[t.number]["state"] for t in trials if t.user_attrs["stage"] == s)
        assert stage["counts"] == dict(states)
    return summary


def _retries_of(trials: list[FrozenTrial], number: int) -> list[FrozenTrial]:
    return [t for t in trials if t.system_attrs.get("failed_trial") == number]


# --- the storage alone: a call made while the server restarts waits for it -------------
def test_calls_during_a_restart_wait_for_the_server(
    pg_server: PostgresServer,
    pg_url: str,
) -> None:
    storage = open_storage(pg_url)
    study_id = storage.create_new_study([optuna.study.StudyDirection.MAXIMIZE], "s")
    restarted = threading.Event()

    def restart() -> None:
        pg_server.stop()
        time.sleep(1.0)  # calls made now are refused, then retried
        pg_server.start()
        restarted.set()

    thread = threading.Thread(target=restart)
    thread.start()
    made = 0
    while not restarted.is_set():  # every call succeeds, some only after the restart
        storage.create_new_trial(study_id)
        made += 1
    thread.join()
    assert storage.get_n_trials(study_id) == made  # none lost, none made twice


def test_a_server_that_stays_down_ends_a_call_with_one_line(
    pg_server: PostgresServer,
    pg_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BABYSIT_STORAGE_PATIENCE", "1.5")
    storage = open_storage(pg_url)
    study_id = storage.create_new_study([optuna.study.StudyDirection.MAXIMIZE], "s")
    pg_server.stop()
    started = time.monotonic()
    with pytest.raises(StorageUnavailable) as caught:
        storage.get_all_trials(study_id)
    waited = time.monotonic() - started
    assert 1.5 <= waited < 60  # the patience, and not the next 10 s waits after it
    line = str(caught.value)
    assert "\n" not in line and "has not answered for 1.5 s" in line and pg_url in line
    assert "--resume" in line


# --- searches through the real CLI -------------------------------------------------------
@pytest.mark.slow
def test_four_workers_share_one_study_in_postgresql(tmp_path: Path, pg_url: str) -> None:
    out = tmp_path / "study"
    config = _config(tmp_path, [8, 4], delay=0.02)
    secret = pg_url.replace("postgres@", "postgres:s3cret@")  # trust auth: ignored, not shown
    proc = _babysit("search", config, "--workers", "4", "--storage", secret, "--out", out)
    stdout, stderr = proc.communicate()
    assert proc.returncode == 0, stderr
    assert "s3cret" not in stdout + stderr + (out / "summary.json").read_text()
    assert "postgres:***@" in stderr  # the search's first line names the storage
    trials = _trials(pg_url, out.name)
    _check_slots(trials, [8, 4])
    assert len(trials) == 12  # nothing lost, nothing run twice
    summary = _check_summary(out, trials)
    assert summary.study["storage"] == secret.replace("s3cret", "***")
    assert len(list((out / "workers").glob("worker-*.log"))) == 4
    pids = {owner_of(t)["pid"] for t in trials}  # type: ignore[index]
    assert len(pids) >= 2 and proc.pid not in pids  # the trials ran in worker processes


@pytest.mark.slow
@pytest.mark.parametrize("then", [signal.SIGKILL, signal.SIGCONT], ids=["killed", "thawed"])
def test_a_frozen_worker_s_trial_is_requeued_once_by_the_heartbeat(
    tmp_path: Path, pg_url: str, then: signal.Signals
) -> None:
    """SIGSTOP keeps the worker's pid alive, so the master's sweep of dead local workers
    leaves its trial alone (as for a worker on another machine): only the heartbeat,
    silent for BABYSIT_GRACE seconds, can fail it. Then the worker is SIGKILLed, or
    thawed (SIGCONT: a network partition that heals): it finds its trial failed at its
    next write and goes on with the next trial."""
    out = tmp_path / "study"
    env = {"BABYSIT_HEARTBEAT": "1", "BABYSIT_GRACE": "6"}
    # a second stage: work is left when the thawed worker next writes to its failed trial
    args = ("search", _config(tmp_path, [6, 4]), "--workers", "4", "--storage", pg_url)
    proc = _babysit(*args, "--out", out, "--quiet", env=env)
    trials = wait_for(proc, lambda: _trials(pg_url, out.name), running_a_while)
    victim = next(t for t in trials if t.state == TrialState.RUNNING and owner_of(t))
    pid = owner_of(victim)["pid"]  # type: ignore[index]
    _freeze_outside_a_transaction(pid, pg_url)
    frozen_at = datetime.now()  # Optuna's datetimes: naive local time

    def victim_failed(trials: list[FrozenTrial]) -> bool:
        return next(t for t in trials if t.number == victim.number).state == TrialState.FAIL

    trials = wait_for(proc, lambda: _trials(pg_url, out.name), victim_failed)
    os.kill(pid, 0)  # still there (stopped): it was the heartbeat, not the dead-pid sweep
    failed_at = next(t for t in trials if t.number == victim.number).datetime_complete
    assert failed_at is not None
    # failed BABYSIT_GRACE (6 s) after its last heartbeat, well before the default grace
    # (90 s) would have: the knob reached the master
    assert (failed_at - frozen_at).total_seconds() < 90
    os.kill(pid, then)
    _, stderr = proc.communicate()
    assert proc.returncode == 0, stderr
    trials = _trials(pg_url, out.name)
    _check_slots(trials, [6, 4])
    assert [t.number for t in trials if t.state == TrialState.FAIL] == [victim.number]
    retries = _retries_of(trials, victim.number)
    assert len(retries) == 1 and retries[0].params == victim.params
    summary = _check_summary(out, trials)
    assert Counter(t["state"] for t in summary.trials) == {"complete": 10, "lost": 1}
    logs = "".join(p.read_text() for p in (out / "workers").glob("*.log"))
    assert "error:" not in logs  # the thawed worker went on (it does not crash on its trial)


def _freeze_outside_a_transaction(pid: int, url: str) -> None:
    """SIGSTOP ``pid`` at a moment when no session holds a transaction open (a process
    frozen inside one would hold its row locks, and the sweep would wait on them)."""
    import psycopg2

    dsn = url.replace("postgresql+psycopg2://", "postgresql://")
    while True:
        os.kill(pid, signal.SIGSTOP)
        with psycopg2.connect(dsn) as conn, conn.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND state LIKE 'idle in transaction%'"
            )
            (open_transactions,) = cursor.fetchone()
        conn.close()
        if open_transactions == 0:
            return
        os.kill(pid, signal.SIGCONT)
        time.sleep(0.05)


@pytest.mark.slow
def test_a_server_restart_mid_search_loses_nothing(
    tmp_path: Path,
    pg_server: PostgresServer,
    pg_url: str,
) -> None:
    out = tmp_path / "study"
    args = ("search", _config(tmp_path, [8]), "--workers", "4", "--storage", pg_url)
    proc = _babysit(*args, "--out", out, "--quiet")
    wait_for(proc, lambda: _trials(pg_url, out.name), _one_done_one_running)
    pg_server.stop()
    time.sleep(3.0)  # the master and the workers find the server gone and retry
    pg_server.start()
    _, stderr = proc.communicate()
    assert proc.returncode == 0, stderr
    assert "does not answer" in stderr and "answers again" in stderr
    trials = _trials(pg_url, out.name)
    _check_slots(trials, [8])
    assert len(trials) == 8  # no trial lost to the restart, none made twice
    _check_summary(out, trials)


@pytest.mark.slow
def test_a_server_down_too_long_stops_the_search_with_one_line_then_it_resumes(
    tmp_path: Path,
    pg_server: PostgresServer,
    pg_url: str,
) -> None:
    out, config = tmp_path / "study", _config(tmp_path, [8])
    env = {"BABYSIT_STORAGE_PATIENCE": "3"}
    proc = _babysit("search", config, "--workers", "4", "--storage", pg_url, "--out", out, env=env)
    trials = wait_for(proc, lambda: _trials(pg_url, out.name), _one_done_one_running)
    workers = {owner_of(t)["pid"] for t in trials if owner_of(t)}  # type: ignore[index]
    pg_server.stop()
    _, stderr = proc.communicate()  # it ends by itself: no hang
    assert proc.returncode == 2, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("babysit: error:")]
    assert len(errors) == 1 and "Traceback" not in stderr
    assert "has not answered for 3 s" in errors[0] and "--resume" in errors[0]
    for pid in workers:  # the master stopped its workers on the way out
        assert not Path(f"/proc/{pid}").exists() or _zombie(pid)

    pg_server.start()
    resumed = _babysit("search", "--resume", "--out", out, "--storage", pg_url, "--quiet")
    _, stderr = resumed.communicate()
    assert resumed.returncode == 0, stderr
    trials = _trials(pg_url, out.name)
    _check_slots(trials, [8])
    lost = [t for t in trials if t.state == TrialState.FAIL]
    assert lost  # the trials running when the search stopped ...
    for trial in lost:  # ... each re-queued exactly once
        assert len(_retries_of(trials, trial.number)) == 1
    assert len(trials) == 8 + len(lost)
    _check_summary(out, trials)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")
    except (OSError, IndexError):
        return True  # gone meanwhile
