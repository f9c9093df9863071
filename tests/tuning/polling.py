"""Watching a running search from a test: read its trials with plain Optuna, wait for a moment."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

from babysit.tuning.slots import owner_of


def journal_trials(study_dir: Path) -> list[FrozenTrial]:
    """The trials of the study in ``study_dir``'s journal ([] before the master made it)."""
    journal = study_dir / "journal.log"
    if not journal.is_file():
        return []
    storage = JournalStorage(JournalFileBackend(str(journal)))
    try:
        study = optuna.load_study(study_name=study_dir.name, storage=storage)
    except KeyError:  # the master has not made it yet
        return []
    return study.get_trials(deepcopy=False)


def wait_for(
    proc: subprocess.Popen[str],
    read: Callable[[], list[FrozenTrial]],
    ready: Callable[[list[FrozenTrial]], bool],
) -> list[FrozenTrial]:
    """Poll ``read()`` until ``ready(trials)``; the test fails if the search ends first."""
    while True:
        assert proc.poll() is None, proc.communicate()
        trials = read()
        if ready(trials):
            return trials
        time.sleep(0.2)


def running_a_while(trials: list[FrozenTrial]) -> bool:
    """Some trial claimed by its worker has run for over 0.5 s."""
    now = time.time()
    return any(
        t.state == TrialState.RUNNING
        and owner_of(t) is not None
        and now - t.datetime_start.timestamp() > 0.5  # type: ignore[union-attr]
        for t in trials
    )
