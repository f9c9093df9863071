"""``babysit.search()``: a study's stages, their trials queued and run, then ``summary.json``.

For each ``[[search.stage]]`` (coarse -> fine) the master records the stage's ranges in
the study, queues its trials (slots.py: with the random sampler it draws their values
itself, seeded, so the trials tried do not depend on the number of workers), has them
run — in this process with one worker, else by ``workers`` processes of a backend
(launch.py) — and, once every slot is done, zooms the ranges around the stage's best
trials or widens them past a border (stages.py). Adaptive samplers (tpe, gp) draw a
trial's values when a worker takes it and see every finished trial of the study.

``resume=True`` continues a study whose master stopped: it replays the stages from the
storage (a finished stage zooms to the same ranges again), fails the trials whose
process is gone and re-queues each once, and queues only the slots no trial holds, so
no trial is lost or run twice. Bad input raises ConfigError / TaskError before anything
is written.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Mapping
from contextlib import ExitStack
from typing import Any, Literal

import optuna

from babysit._io import json_restore, json_safe
from babysit.config import Config
from babysit.errors import ConfigError
from babysit.training.rundir import check_new_run_dir, lock_run_dir
from babysit.tuning.dimensions import Dimension
from babysit.tuning.inputs import Setup, prepare
from babysit.tuning.launch import BACKENDS, LOG_DIR, Pool, sigterm_interrupts
from babysit.tuning.objective import TrainObjective
from babysit.tuning.population_executor import PRUNE_WAVE, executors, run_population
from babysit.tuning.progress import SearchCallback, Status
from babysit.tuning.slots import SlotCount, TrialQueue, count_slots, slot_values
from babysit.tuning.stages import next_stage
from babysit.tuning.study import ATTR, DONE, create_study, open_storage, quiet_optuna, safe_url
from babysit.tuning.summary import Study, summarize, trial_record
from babysit.tuning.trial import Objective
from babysit.tuning.worker import POLL, Worker

__all__ = ["search"]


def search(
    config: str | os.PathLike[str] | Mapping[str, Any] | Config | None = None,
    *,
    objective: Objective | str | None = None,
    out: str | os.PathLike[str] | None = None,
    progress: SearchCallback | None = None,
    workers: int = 1,
    backend: str = "local",
    address: str | None = None,
    storage: str | None = None,
    resume: bool = False,
) -> Study:
    """Search the config's ``[search.space]`` stage by stage; return the :class:`Study`.

    ``objective(params, report) -> score``: the user's own training, ``params`` by dotted
    key, ``report(epoch, value)`` after each epoch (stages and pruning); a callable, or
    ``"pkg.module:fn"`` / ``"file.py:fn"``. Without one each trial trains the config with
    ``babysit.train`` and scores its best validation epoch. ``workers`` > 1 runs trials in
    that many processes of ``backend`` (a callable objective must then be importable: a
    module-level function); ``backend="ray"`` runs them as actors on the Ray cluster at
    ``address`` (``"auto"``, ``"HOST:PORT"``; None: docs/cluster.md). ``storage``
    overrides ``search.storage``. ``resume=True`` continues the study in ``out``.
    ``progress`` gets the search's events. At the end ``summary.json`` is written, and the
    study's ``report.html`` when ``train.report``.
    """
    start = BACKENDS.get_or_raise(backend, where="--backend").starter(backend, address)
    setup, opened = prepare(
        config, objective=objective, out=out, workers=workers, storage=storage, resume=resume
    )
    builtin = isinstance(setup.runner, TrainObjective)
    chosen = executors(setup.config, setup.space, builtin=builtin, workers=workers)
    progress = progress or SearchCallback()
    with ExitStack() as held, quiet_optuna(), sigterm_interrupts():
        if opened is None:
            study, backing = _create(setup, held)
        else:  # one master at a time: a second one is refused, naming the first's PID
            held.enter_context(lock_run_dir(setup.dir))
            study, backing = opened
        master = _Master(setup, study, backing, progress, workers, chosen)
        try:
            logs = setup.dir / LOG_DIR
            pool = None if workers == 1 else start(setup.url, study.study_name, workers, logs)
            result = master.run(pool)
        finally:
            progress.on_search_end()
        result.write()
        if setup.config.train.report:  # the study's page, as train() writes a run's
            from babysit.report.html import write_report  # matplotlib: only when asked for

            result.report = write_report(setup.dir)
    return result


def _create(setup: Setup, held: ExitStack) -> tuple[optuna.Study, optuna.storages.BaseStorage]:
    """A new study in a new study dir, locked for this master in ``held`` (the dir is
    removed again if the study cannot be made)."""
    created = not setup.dir.exists()
    try:
        setup.dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # e.g. under /proc, where os.access says yes to root
        raise ConfigError(
            f"--out {setup.dir}: cannot create the study directory: {exc.strerror or exc}"
        ) from None
    held.enter_context(lock_run_dir(setup.dir))  # taken: another master's dir stays as it is
    check_new_run_dir(setup.dir)  # still empty: no master made its study here meanwhile
    try:
        storage = open_storage(setup.url)
        return create_study(
            setup.config,
            setup.dir,
            storage,
            url=setup.url,
            name=setup.dir.resolve().name,
            metric=setup.metric,
            direction=setup.direction,
            objective=setup.objective,
        ), storage
    except BaseException:
        if created:
            shutil.rmtree(setup.dir, ignore_errors=True)
        raise


class _Master:
    """Runs the stages of one study (see the module docstring)."""

    def __init__(
        self,
        setup: Setup,
        study: optuna.Study,
        storage: optuna.storages.BaseStorage,
        progress: SearchCallback,
        workers: int,
        chosen: list[Literal["population", "trainer"]],
    ) -> None:
        self.setup, self.study, self.storage, self.progress = setup, study, storage, progress
        self.workers, self.executors = workers, chosen
        self.queue = TrialQueue(study, storage)
        self.info: dict[str, Any] = json_restore(study.user_attrs[ATTR])
        self.stages: list[dict[str, Any]] = json_restore(study.user_attrs.get("stages", []))
        self.records: dict[int, dict[str, Any]] = {}  # finished trials' records by number

    def run(self, pool: Pool | None) -> Study:
        cfg, space = self.setup.config, self.setup.space
        local = None
        if pool is None:
            local = Worker(self.study, self.storage, cfg, self.info, self.setup.runner)
            local.queue.master = os.getpid()  # its trials are lost with this master
        self.progress.on_search_start(
            {
                "dir": self.setup.dir,
                "name": self.study.study_name,
                "storage": safe_url(self.setup.url),
                "metric": self.info["metric"],
                "workers": self.workers,
                "stages": len(cfg.search.stage),
            }
        )
        ranges: dict[str, Dimension] = dict(space)
        warnings: list[dict[str, Any]] = []
        try:
            for s in range(len(cfg.search.stage)):
                self._record_stage(s, ranges)
                self._run_stage(s, ranges, pool, local)
                ranges, new = self._zoom(s, ranges)
                warnings += [{**w, "stage": s} for w in new]
                self.study.set_user_attr("border_warnings", json_safe(warnings))
                self.progress.on_stage_end(s, new)
            self.study.set_user_attr(DONE, True)
            if pool is not None:
                pool.finish()
        finally:
            if pool is not None:
                pool.stop()
        stages = self.stages[: len(cfg.search.stage)]
        return summarize(
            self.study, space, directory=self.setup.dir, stages=stages, warnings=warnings,
            info=self.info,
        )  # fmt: skip

    def _record_stage(self, s: int, ranges: Mapping[str, Dimension]) -> None:
        """Write the stage's ranges where workers read them (the same again on a resume)."""
        stage = self.setup.config.search.stage[s]
        record: dict[str, Any] = {"epochs": stage.epochs, "trials": stage.trials}
        record["executor"] = self.executors[s]
        record["mode"] = stage.mode
        record["ranges"] = {key: str(dim) for key, dim in ranges.items()}
        self.stages[s : s + 1] = [record]
        self.study.set_user_attr("stages", json_safe(self.stages))
        self.progress.on_stage_start(s, record)

    def _run_stage(
        self, s: int, ranges: Mapping[str, Dimension], pool: Pool | None, local: Worker | None
    ) -> None:
        """Queue the stage's slots and poll until every one is done."""
        stage = self.setup.config.search.stage[s]
        values = slot_values(self.setup.config, s, ranges)
        started, done_before = time.monotonic(), None
        while True:
            if pool is not None:
                pool.check()  # reaps dead workers, so their trials show up as orphans
            # RDB: silent heartbeats failed and re-queued, here only (worker.run_one)
            optuna.storages.fail_stale_trials(self.study)
            trials = self.study.get_trials(deepcopy=False)
            self.queue.requeue_orphans(trials)
            count = count_slots(trials, s, stage.trials)
            if count.missing or count.to_retry:
                self.queue.fill(s, stage.epochs, values, ranges)
            done_before = len(count.done) if done_before is None else done_before
            self._report(trials, s, count, time.monotonic() - started, done_before)
            if count.finished:
                return
            if local is None or not self._run_local(local, s, len(count.done)):
                time.sleep(POLL)

    def _run_local(self, local: Worker, s: int, done: int) -> bool:
        """Run waiting trials in this process for up to POLL seconds (the population
        executor: one population of them); whether any ran.

        Each trial is told to the progress hooks as it ends (the live table, a caller's
        budget), not as a batch at the next poll.
        """
        if self.executors[s] == "population":
            assert isinstance(self.setup.runner, TrainObjective)
            stage = self.setup.config.search.stage[s]
            pruning = self.setup.config.search.pruner != "none"
            first = PRUNE_WAVE if pruning and done < PRUNE_WAVE else 0
            if stage.mode == "pbt":  # every trial of the stage in one population
                first = stage.trials
            return run_population(
                local, self.setup.config, self.setup.runner.task, first=first,
                on_trial=lambda frozen: self._ended(frozen, s),
            )  # fmt: skip
        deadline = time.monotonic() + POLL
        ran = False
        while time.monotonic() < deadline:
            frozen = local.run_one()
            if frozen is None:
                break
            ran = True
            self._ended(frozen, s)
        return ran

    def _ended(self, frozen: optuna.trial.FrozenTrial, s: int) -> None:
        record = self.records[frozen.number] = trial_record(frozen, self.setup.space)
        if record["stage"] == s:
            self.progress.on_trial_end(record)

    def _report(
        self,
        trials: list[optuna.trial.FrozenTrial],
        s: int,
        count: SlotCount,
        elapsed: float,
        done_before: int,
    ) -> None:
        """on_trial_end for trials newly finished, then on_status."""
        for t in trials:
            if t.number not in self.records and t.state.is_finished():
                record = self.records[t.number] = trial_record(t, self.setup.space)
                if record["stage"] == s:
                    self.progress.on_trial_end(record)
        records = [r for r in self.records.values() if r["stage"] == s]
        states: dict[str, int] = {}
        for r in records:
            states[r["state"]] = states.get(r["state"], 0) + 1
        complete = [r for r in records if r["state"] == "complete"]
        sign = 1.0 if self.info["direction"] == "max" else -1.0
        best = max(complete, key=lambda r: sign * r["value"]) if complete else None
        now = len(count.done) - done_before
        left = count.trials - len(count.done)
        self.progress.on_status(
            Status(
                stage=s,
                stages=len(self.setup.config.search.stage),
                epochs=self.setup.config.search.stage[s].epochs,
                trials=count.trials,
                done=len(count.done),
                running=count.running,
                states=states,
                best=None if best is None else best["value"],
                best_trial=None if best is None else best["number"],
                elapsed=elapsed,
                eta=elapsed / now * left if now else None,
                metric=self.info["metric"],
            )
        )

    def _zoom(
        self, s: int, ranges: Mapping[str, Dimension]
    ) -> tuple[dict[str, Dimension], list[dict[str, Any]]]:
        """The next stage's ranges and this stage's border warnings (stages.py)."""
        space = self.setup.space
        done = [
            ({k: space[k].decode(v) for k, v in t.params.items()}, float(t.value))
            for t in self.study.get_trials(
                deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)
            )
            if t.user_attrs.get("stage") == s and t.value is not None
        ]
        cfg = self.setup.config.search
        return next_stage(ranges, done, direction=self.info["direction"], top_k=cfg.top_k)
