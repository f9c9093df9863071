"""Slots: a stage's trials counted once each; lost trials re-queued once; orphans found."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState, create_trial

from babysit.config import load_config
from babysit.tuning.slots import (
    HOST,
    LOST_WITH,
    OWNER,
    RETRIES,
    TrialQueue,
    count_slots,
    is_lost,
    is_orphan,
    slot_values,
)
from babysit.tuning.space import parse_space


def _trial(
    number: int, state: TrialState, slot: int, *, retry_of: int | None = None, **attrs: Any
) -> FrozenTrial:
    system = {} if retry_of is None else {"failed_trial": retry_of, "retry_history": [retry_of]}
    value = 1.0 if state == TrialState.COMPLETE else None
    trial = create_trial(
        state=state,
        value=value,
        user_attrs={"stage": 0, "slot": slot, **attrs},
        system_attrs=system,
    )
    trial.number = number
    return trial


def test_each_outcome_of_a_slot_is_counted_as_the_docstring_says() -> None:
    assert RETRIES == 2
    master = {LOST_WITH: "master"}
    trials = [
        _trial(0, TrialState.COMPLETE, 0),
        _trial(1, TrialState.FAIL, 1, diverged=True),  # a result
        _trial(2, TrialState.FAIL, 2, error="boom"),  # a result
        _trial(3, TrialState.FAIL, 3),  # lost, re-queued as 6
        _trial(4, TrialState.FAIL, 4),  # lost, never re-queued: to retry
        _trial(5, TrialState.RUNNING, 5),
        _trial(6, TrialState.WAITING, 3, retry_of=3),
        _trial(7, TrialState.FAIL, 7),  # lost with its worker three times: given up
        _trial(8, TrialState.FAIL, 7, retry_of=7),
        _trial(9, TrialState.FAIL, 7, retry_of=7),
        _trial(10, TrialState.FAIL, 8),  # lost with its worker twice: once more
        _trial(11, TrialState.FAIL, 8, retry_of=10),
        _trial(12, TrialState.FAIL, 9, **master),  # lost with its master: never counted
        _trial(13, TrialState.FAIL, 9, retry_of=12, **master),
        _trial(14, TrialState.FAIL, 9, retry_of=12, **master),
        _trial(15, TrialState.FAIL, 9, retry_of=12, **master),
        _trial(16, TrialState.FAIL, 10),  # a lost try, then the retry's result
        _trial(17, TrialState.COMPLETE, 10, retry_of=16),
    ]
    count = count_slots(trials, 0, 12)
    assert count.done == {0, 1, 2, 7, 10}
    assert (count.running, count.waiting) == (1, 1)
    assert count.missing == [6, 11]
    assert [t.number for t in count.to_retry] == [4, 11, 15]  # each slot's latest try
    assert not count.finished
    assert [is_lost(t) for t in trials[:5]] == [False, False, False, True, True]


def test_random_slot_values_depend_on_seed_and_stage_only() -> None:
    config = load_config({"search": {"seed": 3, "stage": [{"trials": 5}, {"trials": 5}]}})
    space = parse_space(config)
    assert slot_values(config, 0, space) == slot_values(config, 0, space)
    assert slot_values(config, 0, space) != slot_values(config, 1, space)
    tpe = load_config({"search": {"sampler": "tpe", "stage": [{"trials": 5}]}})
    assert slot_values(tpe, 0, parse_space(tpe)) == [{}] * 5  # the sampler draws them


def test_a_trial_whose_process_is_gone_is_an_orphan() -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    now = datetime.now()

    def running(owner: dict[str, Any]) -> FrozenTrial:
        trial = _trial(0, TrialState.RUNNING, 0, **{OWNER: owner})
        trial.datetime_start = now
        return trial

    assert is_orphan(running({"host": HOST, "pid": int(gone.stdout), "trial": 0}))
    assert is_orphan(running({"host": HOST, "pid": os.getpid(), "trial": 0}))  # runs none
    assert not is_orphan(running({"host": HOST, "pid": os.getppid(), "trial": 0}))  # alive
    assert not is_orphan(running({"host": "another-machine", "pid": int(gone.stdout), "trial": 0}))
    # a stamp inherited from the lost trial 3 is no claim: the trial was just taken
    assert not is_orphan(running({"host": HOST, "pid": int(gone.stdout), "trial": 3}))


def test_requeue_fails_an_orphan_and_queues_its_values_until_the_slot_is_given_up() -> None:
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=storage, study_name="s")
    queue = TrialQueue(study, storage)
    queue.master = os.getpid()  # the master's own worker: its losses are the worker's
    study.enqueue_trial({"x": 0.5}, user_attrs={"stage": 0, "epochs": 1, "slot": 0})
    trial = queue.take()
    assert trial is not None and trial.suggest_float("x", 0, 1) == 0.5
    assert queue.take() is None
    assert queue.requeue_orphans(study.get_trials()) == [trial.number]  # owner: this process
    lost, retry = study.get_trials()
    assert lost.state == TrialState.FAIL and is_lost(lost)
    assert lost.user_attrs[LOST_WITH] == "worker"
    assert retry.state == TrialState.WAITING and retry.params == {"x": 0.5}
    assert retry.user_attrs["slot"] == 0 and retry.system_attrs["failed_trial"] == lost.number
    assert LOST_WITH not in retry.user_attrs and OWNER not in retry.user_attrs
    # a worker has taken the retry but not yet stamped it: not an orphan yet
    retry_id = queue.trial_id(retry.number)
    assert storage.set_trial_state_values(retry_id, state=TrialState.RUNNING)
    assert queue.requeue_orphans(study.get_trials()) == []
    storage.set_trial_state_values(retry_id, state=TrialState.WAITING)
    for _ in range(RETRIES):  # lost again and again: re-queued RETRIES times in all
        again = queue.take()
        assert again is not None
        assert queue.requeue_orphans(study.get_trials()) == [again.number]
    assert len(study.get_trials()) == RETRIES + 1
    assert count_slots(study.get_trials(), 0, 1).finished  # given up
    history = study.get_trials()[-1].system_attrs["retry_history"]
    assert history == [0, 1]  # Optuna's convention: the first try, then each lost retry


def test_a_trial_lost_with_its_master_is_requeued_without_counting() -> None:
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=storage, study_name="s")
    queue = TrialQueue(study, storage)
    study.enqueue_trial({"x": 0.5}, user_attrs={"stage": 0, "epochs": 1, "slot": 0})
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    queue.master = int(gone.stdout)  # a worker of a master that has died since
    for round_ in range(2 * RETRIES + 2):  # the master killed over and over
        trial = queue.take()
        assert trial is not None, round_
        assert queue.requeue_orphans(study.get_trials()) == [trial.number]
        assert study.get_trials()[trial.number].user_attrs[LOST_WITH] == "master"
    count = count_slots(study.get_trials(), 0, 1)
    assert count.waiting == 1 and not count.done  # still queued: no try counted
