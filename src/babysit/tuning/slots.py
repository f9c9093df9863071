"""Each stage's trials as numbered slots of the study: enqueue, take, count, re-queue.

The master enqueues every trial of a stage up front, as WAITING trials with the user
attributes ``{stage, epochs, slot}``. With the random sampler it draws their values
itself (seeded by ``search.seed`` and the stage: slot ``i`` always gets the ``i``-th
draw); adaptive samplers get only the narrowed choices fixed and draw the rest when a
worker takes the trial. A worker only ever takes a waiting trial (:meth:`TrialQueue.take`,
atomic in every Optuna storage), so the set of trials does not depend on how many workers
run them and every count is exact.

A trial is *lost* when its process died: FAIL with neither ``error`` nor ``diverged``
(``run_trial`` always sets one of them). The orphan sweep records why in the user
attribute ``lost_with``: ``"master"`` when the trial's process served a master that is no
longer this one (the master was killed, and its workers followed it), else ``"worker"``
(its worker died while its master lived: a SIGKILL, the OOM killer, a trial that crashes
its process), or ``"unclaimed"`` when its process died between taking it and stamping it
(no objective ran yet; not counted against the slot either). A lost trial is re-queued
with the same values (a new trial with Optuna's
``failed_trial`` / ``retry_history`` system attributes, as its
``RetryHeartbeatStaleTrialCallback`` writes them, which RDB storages apply to trials whose
heartbeat stopped); losses with the master are not counted against the slot, a slot
lost with its worker more than ``RETRIES`` times is given up (a trial that kills its
worker every time must not loop forever). A slot is done when its trial is complete,
pruned, diverged or failed, or is given up.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState, create_trial

from babysit.config import Config
from babysit.tuning.dimensions import Dimension

__all__ = [
    "LOST_WITH",
    "OWNER",
    "PRESAMPLED",
    "RETRIES",
    "SlotCount",
    "TrialQueue",
    "count_slots",
    "is_lost",
    "is_orphan",
    "owner_of",
    "slot_values",
]

PRESAMPLED = ("random",)  # samplers whose values the master draws and enqueues per stage
OWNER = "worker"  # user attribute of a taken trial: {"host", "pid", "trial", "master"}
LOST_WITH = "lost_with"  # a lost trial's: "master" | "worker" | "unclaimed" (the docstring)
FREE_LOSSES = ("master", "unclaimed")  # not counted against the slot's RETRIES
RETRIES = 2  # re-queues of a slot lost with its worker (losses with the master are free)
ORPHAN_AFTER = 60.0  # seconds: a RUNNING trial no process has claimed is then taken as lost
HOST = socket.gethostname()


def slot_values(
    config: Config, stage: int, ranges: Mapping[str, Dimension]
) -> list[dict[str, Any]]:
    """The values the master fixes for each slot of ``stage`` (seeded; see the docstring)."""
    rng = np.random.default_rng([config.search.seed, stage])
    presampled = config.search.sampler in PRESAMPLED
    drawn = [key for key, dim in ranges.items() if presampled or dim.narrowed]
    trials = config.search.stage[stage].trials
    return [{key: ranges[key].sample(rng) for key in drawn} for _ in range(trials)]


def is_lost(trial: FrozenTrial) -> bool:
    attrs = trial.user_attrs
    return trial.state == TrialState.FAIL and "error" not in attrs and not attrs.get("diverged")


def _charged(trial: FrozenTrial) -> bool:
    """A lost trial counted against its slot's retries: not lost with its master."""
    return is_lost(trial) and trial.user_attrs.get(LOST_WITH) not in FREE_LOSSES


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def owner_of(trial: FrozenTrial) -> dict[str, Any] | None:
    """``{"host", "pid", "trial", "master"}`` of the process that claimed ``trial`` (None:
    none has).

    A re-queued trial inherits the user attributes of the lost one, its dead owner
    included: a stamp made for another trial number is no claim on this one (between a
    worker's taking the retry and its stamping it, the retry would look orphaned).
    """
    owner = trial.user_attrs.get(OWNER)
    if not isinstance(owner, dict) or owner.get("trial") != trial.number:
        return None
    return owner


def is_orphan(trial: FrozenTrial) -> bool:
    """A RUNNING trial whose process on this machine is gone (or is this very process,
    which runs no trial while it asks). Other machines' trials: the RDB heartbeat's job."""
    if trial.state != TrialState.RUNNING:
        return False
    owner = owner_of(trial)
    if owner is None:  # taken, then killed before it could claim the trial
        start = trial.datetime_start
        return start is not None and time.time() - start.timestamp() > ORPHAN_AFTER
    pid = int(owner["pid"])
    return owner["host"] == HOST and (pid == os.getpid() or not _alive(pid))


@dataclass
class SlotCount:
    """Where the slots of one stage stand."""

    trials: int  # the stage's slots
    done: set[int] = field(default_factory=set)
    running: int = 0
    waiting: int = 0
    missing: list[int] = field(default_factory=list)  # no trial holds them: enqueue
    to_retry: list[FrozenTrial] = field(default_factory=list)  # lost, to re-queue

    @property
    def finished(self) -> bool:
        return len(self.done) == self.trials and not self.running and not self.waiting


def _slot_key(trial: FrozenTrial) -> tuple[Any, Any]:
    return trial.user_attrs.get("stage"), trial.user_attrs.get("slot")


def _done(held: Sequence[FrozenTrial]) -> bool:
    """Whether a slot whose trials are ``held`` is done: a result, or given up."""
    results = [t for t in held if t.state.is_finished() and not is_lost(t)]
    return bool(results) or sum(_charged(t) for t in held) > RETRIES


def _to_retry(held: Sequence[FrozenTrial]) -> FrozenTrial | None:
    """The lost try to re-queue (the latest) of a slot that is not done; None if none."""
    lost = [t for t in held if is_lost(t)]
    return None if _done(held) or not lost else max(lost, key=lambda t: t.number)


def count_slots(trials: Sequence[FrozenTrial], stage: int, n: int) -> SlotCount:
    """Count the ``n`` slots of ``stage`` over the study's trials."""
    by_slot: dict[int, list[FrozenTrial]] = {}
    for t in trials:
        if t.user_attrs.get("stage") == stage and "slot" in t.user_attrs:
            by_slot.setdefault(int(t.user_attrs["slot"]), []).append(t)
    count = SlotCount(trials=n)
    for slot in range(n):
        held = by_slot.get(slot, [])
        count.running += sum(t.state == TrialState.RUNNING for t in held)
        count.waiting += sum(t.state == TrialState.WAITING for t in held)
        if _done(held):
            count.done.add(slot)
        elif not any(t.state in (TrialState.RUNNING, TrialState.WAITING) for t in held):
            retry = _to_retry(held)
            if retry is not None:
                count.to_retry.append(retry)
            else:
                count.missing.append(slot)
    return count


class TrialQueue:
    """The study's waiting trials: enqueue a stage's slots, take one, re-queue a lost one."""

    def __init__(self, study: optuna.Study, storage: BaseStorage) -> None:
        self.study, self.storage = study, storage
        self.study_id = storage.get_study_id_from_name(study.study_name)
        # the PID of the master whose trials this process runs (its stamp says so): the
        # master's own, a local worker's --parent, a Ray worker's master; None for a
        # worker started on its own
        self.master: int | None = None
        self.stamp: dict[str, Any] = {}  # more of the owner stamp: a Ray worker's ids

    def fill(
        self,
        stage: int,
        epochs: float,
        values: Sequence[Mapping[str, Any]],
        ranges: Mapping[str, Dimension],
    ) -> SlotCount:
        """Enqueue the slots of ``stage`` no trial holds; re-queue its lost tries.

        A slot is added as a WAITING trial with its params already set (what the worker's
        ``suggest`` then returns): Optuna's ``enqueue_trial`` would keep them aside and
        write each one again when the trial is asked, one journal write per value.
        """
        count = count_slots(self.study.get_trials(deepcopy=False), stage, len(values))
        for slot in count.missing:
            attrs = {"stage": stage, "epochs": epochs, "slot": slot}
            params = dict(values[slot])
            used = {key: ranges[key].distribution() for key in params}
            self.study.add_trial(
                create_trial(
                    state=TrialState.WAITING, params=params, distributions=used, user_attrs=attrs
                )
            )
        for trial in count.to_retry:
            self._requeue(trial)
        return count

    def _requeue(self, trial: FrozenTrial) -> None:
        """Queue ``trial``'s values again as a new WAITING trial of its slot."""
        system = dict(trial.system_attrs)
        system["failed_trial"] = system.get("failed_trial", trial.number)
        system["retry_history"] = [*system.get("retry_history", []), trial.number]
        attrs = {k: v for k, v in trial.user_attrs.items() if k not in (OWNER, LOST_WITH)}
        self.study.add_trial(
            create_trial(
                state=TrialState.WAITING,
                params=trial.params,
                distributions=trial.distributions,
                user_attrs=attrs,
                system_attrs=system,
            )
        )

    def trial_id(self, number: int) -> int:
        """The storage's id of trial ``number`` (what the storage's own calls take)."""
        return self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number)

    def take(self) -> optuna.Trial | None:
        """A waiting trial, now RUNNING and claimed by this process; None when none waits."""
        for frozen in self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            trial_id = self.trial_id(frozen.number)
            try:
                if not self.storage.set_trial_state_values(trial_id, state=TrialState.RUNNING):
                    continue  # another worker took it first
            except optuna.exceptions.UpdateFinishedTrialError:
                continue
            trial = optuna.Trial(self.study, trial_id)
            owner = {"host": HOST, "pid": os.getpid(), "trial": frozen.number, **self.stamp}
            trial.set_user_attr(OWNER, owner | {"master": self.master})
            return trial
        return None

    def requeue_orphans(
        self, trials: Sequence[FrozenTrial], orphan: Callable[[FrozenTrial], bool] = is_orphan
    ) -> list[int]:
        """Fail every ``orphan`` RUNNING trial among ``trials``, marked with why it was lost
        (``lost_with``), and re-queue it unless its slot is given up; their numbers. Only
        the caller whose FAIL the storage takes re-queues it."""
        lost = []
        for trial in trials:
            if trial.state != TrialState.RUNNING or not orphan(trial):
                continue
            owner = owner_of(trial)
            master = None if owner is None else owner.get("master")
            # unclaimed: taken, then its process died before it stamped it (no objective ran,
            # so it cannot be the trial that kills its worker: not counted, like "master")
            cause = (
                "unclaimed"
                if owner is None
                else "master"
                if master is not None and master != os.getpid()
                else "worker"
            )
            trial_id = self.trial_id(trial.number)
            try:
                self.storage.set_trial_user_attr(trial_id, LOST_WITH, cause)
                if not self.storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
                    continue
            except optuna.exceptions.UpdateFinishedTrialError:
                continue  # it ended meanwhile
            lost.append(trial.number)
        if lost:  # re-queued here unless given up (fill() would do it at the next poll)
            now = self.study.get_trials(deepcopy=False)
            for number in lost:
                key = _slot_key(now[number])
                held = [t for t in now if _slot_key(t) == key]
                if _to_retry(held) is not None and not any(
                    t.state in (TrialState.RUNNING, TrialState.WAITING) for t in held
                ):
                    self._requeue(now[number])
        return lost
