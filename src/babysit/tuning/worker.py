"""``babysit worker``: take the study's waiting trials, run them, tell how they ended.

A worker needs only the storage URL and the study's name: the config, the study dir and
the objective are in the study's user attributes (study.py). For each trial it takes
(slots.py) it sets the values within the stage's ranges (the study's ``"stages"``
attribute), trains for the stage's epochs with ``babysit.train`` or calls the user's
objective, reports every epoch, writes ``trials/s<stage>-<number>/`` under the study dir
and tells Optuna how the trial ended (trial.py). On an RDB storage it records Optuna's
heartbeat while a trial runs. When no trial waits it waits for the master to queue the
next stage, and returns once the master has marked the study done.

The master runs the same :class:`Worker` in its own process when it has one worker.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage, RDBStorage
from optuna.trial import FrozenTrial

from babysit._io import json_restore
from babysit.config import Config
from babysit.errors import ConfigError
from babysit.tasks import import_function
from babysit.tuning._retry import StorageUnavailable
from babysit.tuning.dimensions import Dimension, narrow
from babysit.tuning.objective import TrainObjective
from babysit.tuning.slots import TrialQueue
from babysit.tuning.space import parse_space
from babysit.tuning.study import DONE, open_storage, open_study, quiet_optuna, storage_url
from babysit.tuning.summary import trial_record
from babysit.tuning.trial import Objective, Runner, TrialSpec, run_trial, user_runner

__all__ = [
    "BUILTIN",
    "EXECUTOR",
    "POLL",
    "Worker",
    "exit_with_parent",
    "objective_ref",
    "open_worker",
    "runner_for",
    "study_address",
]

EXECUTOR = "executor"  # trial user attribute (built-in objective): "trainer" | "population"
BUILTIN = "builtin"  # the study's objective attribute when trials train with babysit.train
POLL = 0.1  # seconds an idle worker waits before looking for a waiting trial again
PARENT_POLL = 0.5  # seconds between a local worker's checks that its master lives


def objective_ref(objective: Objective | str) -> str | None:
    """What another process imports to run ``objective``: ``"module:name"``, or
    ``"/abs/script.py:name"`` for a function of the script run as ``__main__``; None for a
    lambda or a nested function (only the process that holds it can run it)."""
    if isinstance(objective, str):
        return objective
    name = getattr(objective, "__qualname__", "")
    module = getattr(objective, "__module__", None)
    if not module or not name.isidentifier():  # "<lambda>", "outer.<locals>.inner"
        return None
    if module == "__main__":
        path = getattr(sys.modules["__main__"], "__file__", None)  # None in a notebook
        return f"{Path(path).resolve()}:{name}" if path else None
    return f"{module}:{name}"


def runner_for(
    config: Config, space: Mapping[str, Dimension], objective: Objective | str | None
) -> Runner:
    """The runner of a trial: ``babysit.train`` (``objective`` None or ``BUILTIN``), or the
    user's objective (a callable, or a ``"module:fn"`` / ``"file.py:fn"`` to import)."""
    if objective is None or objective == BUILTIN:
        return TrainObjective(config, space)
    if isinstance(objective, str):
        return user_runner(import_function(objective, what="objective"))
    return user_runner(objective)


def study_address(study_dir: Path | None, storage: str | None, name: str | None) -> tuple[str, str]:
    """(storage URL, study name) from ``--study DIR`` or ``--storage URL --study-name NAME``."""
    if (study_dir is None) == (storage is None) or (storage is None) != (name is None):
        raise ConfigError("give --study DIR, or --storage URL and --study-name NAME")
    if study_dir is None:
        assert storage is not None and name is not None
        return storage_url(storage, Path(".")), name
    url = storage_url(None, study_dir)
    if not url.startswith("journal://") or not Path(url.removeprefix("journal://")).is_file():
        raise ConfigError(
            f"--study {study_dir}: holds no study (no journal.log); a study in a database: "
            "--storage URL --study-name NAME"
        )
    return url, study_dir.resolve().name


class Worker:
    """Takes waiting trials of one study and runs them in this process."""

    def __init__(
        self,
        study: optuna.Study,
        storage: BaseStorage,
        config: Config,
        info: Mapping[str, Any],
        runner: Runner,
    ) -> None:
        self.study, self.runner = study, runner
        self.queue = TrialQueue(study, storage)
        self.space = parse_space(config)
        self.dir = Path(info["dir"])
        self.direction = info["direction"]
        self.builtin = info.get("objective") == BUILTIN
        self._ranges: dict[int, dict[str, Dimension]] = {}

    def ranges(self, stage: int) -> dict[str, Dimension]:
        """The ranges of ``stage``, as the master recorded them when it queued the stage."""
        if stage not in self._ranges:
            record = json_restore(self.study.user_attrs["stages"])[stage]
            self._ranges[stage] = {
                key: narrow(self.space[key], text) for key, text in record["ranges"].items()
            }
        return self._ranges[stage]

    def run_one(self) -> FrozenTrial | None:
        """Take a waiting trial and run it; None when no trial waits.

        Trials whose heartbeat went silent are failed and re-queued by the master alone:
        were a worker to fail one, the master could count it as a lost first try and
        re-queue it too before the worker did (two retries of one slot: PostgreSQL test).
        A worker that was only frozen past the grace finds its trial failed when it next
        writes to it: the trial is lost (its retry runs elsewhere) and the worker goes on.
        """
        claimed = self.claim()
        if claimed is None:
            return None
        trial, spec = claimed
        with self._heartbeat(trial.number):
            try:
                if self.builtin:
                    trial.set_user_attr(EXECUTOR, "trainer")
                return run_trial(self.study, trial, spec, self.runner, direction=self.direction)
            except optuna.exceptions.UpdateFinishedTrialError:
                return self.queue.storage.get_trial(self.queue.trial_id(trial.number))

    def claim(self) -> tuple[optuna.Trial, TrialSpec] | None:
        """Take a waiting trial (RUNNING, claimed) and set its values; None when none waits."""
        trial = self.queue.take()
        if trial is None:
            return None
        stage = int(trial.user_attrs["stage"])
        ranges = self.ranges(stage)
        params = {key: dim.decode(dim.suggest(trial, key)) for key, dim in ranges.items()}
        trial_dir = Path("trials") / f"s{stage}-{trial.number}"
        if self.builtin:
            trial.set_user_attr("dir", trial_dir.as_posix())
        epochs = float(trial.user_attrs["epochs"])
        return trial, TrialSpec(trial.number, stage, epochs, params, self.dir / trial_dir)

    def run(self, *, on_trial: Callable[[dict[str, Any]], None] | None = None) -> int:
        """Run trials until the master marks the study done; the number run.

        ``on_trial`` gets each finished trial's record (summary.py's ``trial_record``).
        """
        count = 0
        while True:
            with quiet_optuna():
                frozen = self.run_one()
            if frozen is not None:
                count += 1
                if on_trial is not None:
                    on_trial(trial_record(frozen, self.space))
            elif self.study.user_attrs.get(DONE):
                return count
            else:
                time.sleep(POLL)

    @contextmanager
    def _heartbeat(self, number: int) -> Iterator[None]:
        """Optuna's heartbeat for the running trial (RDB storages; the journal has none)."""
        storage = self.queue.storage
        interval = storage.get_heartbeat_interval() if isinstance(storage, RDBStorage) else None
        if interval is None:
            yield
            return
        assert isinstance(storage, RDBStorage)
        trial_id, stop = self.queue.trial_id(number), threading.Event()

        def beat() -> None:
            while True:
                try:
                    storage.record_heartbeat(trial_id)  # retried while the database is down
                except StorageUnavailable:
                    return  # the trial's own next call to the storage says so
                if stop.wait(interval):
                    return

        thread = threading.Thread(target=beat, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()


def exit_with_parent(parent: int) -> None:
    """End this process (as SIGTERM would) once its parent is no longer ``parent``."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL)
        os._exit(143)  # 128 + SIGTERM: the trial stays RUNNING, lost with its master

    threading.Thread(target=watch, daemon=True).start()


def open_worker(url: str, name: str, *, bounded: bool = True) -> Worker:
    """A worker on study ``name`` in ``url``; ConfigError when there is no such study.

    ``bounded=False`` (a master's local worker): storage calls retry a database that does
    not answer until the master, which bounds its own wait, stops this worker.
    """
    with quiet_optuna():
        storage = open_storage(url, bounded=bounded)
        study, config, info = open_study(storage, url=url, name=name)
    objective = info.get("objective")
    if objective is None:
        raise ConfigError(
            f"study {name!r} runs a Python objective that other processes cannot import "
            "(a lambda or a nested function): only its own process can run its trials"
        )
    return Worker(study, storage, config, info, runner_for(config, parse_space(config), objective))
