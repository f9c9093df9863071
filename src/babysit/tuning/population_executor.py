"""A stage's trials trained at once as one population (``train_population``), not one by one.

Which executor runs a ``[[search.stage]]`` (its ``executor`` key):

    trainer     each trial a ``babysit.train`` run (worker.py), one after another
    population  the master takes every waiting trial of the stage (RUNNING, claimed as
                :meth:`TrialQueue.take` claims one), trains them with
                ``training/population.py`` in chunks of at most ``CHUNK``, and tells each
                trial how it ended exactly as ``run_trial`` would (trial.py)
    auto        population where it applies (:func:`executors`), else trainer

The population applies when the objective is the built-in one, the search runs in this
process (workers = 1), the stage's epochs are whole, every ``optim.rule`` a trial may get
has a pure update rule (``optim/rules.py``: not lbfgs), and — for ``auto`` only — the
sampler is the random one (its values are drawn before the stage runs; an adaptive
sampler learns from each finished trial, which a population gives it only at the end),
and no pre-training check is asked for (``train.sanity``, ``train.gradcheck``: a
population skips them). A running average of the weights (``train.ema``, ``train.swa``,
set or searched) is the trainer's alone: such a stage goes to the trainer.

Each epoch the population's hook reports every member's validation score to its trial
(one :class:`Reporter` per trial, as the trainer's: a NaN score is a divergence, the
pruner is asked at every epoch but the stage's last) and stops the members whose trial
should prune.
Optuna's median pruner only compares with finished trials: with a pruner, the stage's
first ``PRUNE_WAVE`` trials train as a population of their own first.

A stage with ``mode = "pbt"`` trains all its trials as one population with
population-based training (``[search.pbt]``; training/_population_pbt.py) over the
numeric keys of its ranges, resampling from them; it needs the population executor
(ConfigError where it cannot run, or with ``executor = "trainer"``) and more epochs than
``pbt.every``. It reports every epoch's score but is never pruned (PBT replaces its worst
members itself). Each trial gets the user attributes ``pbt_lineage`` (its exploit events:
epoch, ``source_trial`` whose weights it took, its values ``before`` / ``after``) and
``final_params`` (the explored values it ended with; its params are those it started with).
A resumed pbt stage trains the trials it re-queues as a population of their own.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import optuna
from optuna.trial import FrozenTrial, TrialState

from babysit._io import json_safe
from babysit.config import Config
from babysit.errors import ConfigError
from babysit.optim.rules import RULES
from babysit.tasks import Task
from babysit.training._population_pbt import PBT, explorable
from babysit.training.population import MemberResult, train_population
from babysit.tuning._retry import StorageUnavailable
from babysit.tuning.dimensions import Choice, Dimension
from babysit.tuning.objective import config_for
from babysit.tuning.slots import PRESAMPLED
from babysit.tuning.trial import Reporter, TrialSpec
from babysit.tuning.worker import EXECUTOR, Worker

__all__ = ["CHUNK", "PRUNE_WAVE", "executors", "pbt_of", "run_population"]

CHUNK = 256  # trials per train_population call at most (it splits further to fit in memory)
PRUNE_WAVE = 8  # with a pruner: the stage's first trials, finished before the rest start


def _rules(config: Config, space: Mapping[str, Dimension]) -> list[str]:
    """Every optim.rule a trial of the search may train with."""
    dim = space.get("optim.rule")
    return [str(r) for r in dim.choices] if isinstance(dim, Choice) else [config.optim.rule]


def _why_not(
    config: Config, stage: int, space: Mapping[str, Dimension], builtin: bool, workers: int
) -> str | None:
    """Why the population executor cannot run ``stage`` (None: it can)."""
    epochs = config.search.stage[stage].epochs
    if not builtin:
        return "a user objective trains its trials itself (executor = 'trainer')"
    if workers != 1:
        return f"workers = {workers}: a population trains in the master's process (workers = 1)"
    if not float(epochs).is_integer():
        return f"epochs = {epochs}: a population trains whole epochs"
    averaged = [k for k in ("train.ema", "train.swa") if k in space or getattr(config.train, k[6:])]
    if averaged:
        return f"{averaged[0]}: a population does not average weights (training/averaging.py)"
    bad = [r for r in _rules(config, space) if r not in RULES]
    if bad:
        return f"optim.rule = {bad[0]!r} has no pure update rule (use one of {', '.join(RULES)})"
    return None


def executors(
    config: Config, space: Mapping[str, Dimension], *, builtin: bool, workers: int
) -> list[Literal["population", "trainer"]]:
    """Each stage's executor; ConfigError (one line) for ``executor = "population"`` where
    it cannot run, before anything is written."""
    chosen: list[Literal["population", "trainer"]] = []
    for s, stage in enumerate(config.search.stage):
        why = _why_not(config, s, space, builtin, workers)
        if stage.mode == "pbt":
            _check_pbt(config, s, space, why)
            chosen.append("population")
            continue
        if stage.executor == "population" and why is not None:
            raise ConfigError(f"search.stage[{s}]: executor = 'population' cannot run it: {why}")
        checks = config.train.sanity or config.train.gradcheck  # a population skips them
        auto = why is None and config.search.sampler in PRESAMPLED and not checks
        use = stage.executor == "population" or (stage.executor == "auto" and auto)
        chosen.append("population" if use else "trainer")
    return chosen


def _check_pbt(config: Config, s: int, space: Mapping[str, Dimension], why: str | None) -> None:
    """ConfigError (one line) for a ``mode = "pbt"`` stage that cannot run as one."""
    stage, every = config.search.stage[s], config.search.pbt.every
    where = f"search.stage[{s}]: mode = 'pbt'"
    if stage.executor == "trainer":
        raise ConfigError(
            f"{where} trains the stage's trials together as one population, which executor = "
            "'trainer' cannot; fix: executor = 'auto' or 'population'"
        )
    if why is not None:
        raise ConfigError(f"{where} needs the population executor, which cannot run it: {why}")
    if not stage.epochs > every:
        raise ConfigError(
            f"{where} with epochs = {stage.epochs:g} never exploits (every search.pbt.every = "
            f"{every} epochs, never after the last); fix: epochs > {every}"
        )
    if not explorable(space):
        raise ConfigError(
            f"{where} explores the numeric hyperparameters of [search.space] (e.g. optim.lr, "
            "train.reg, optim.mu, model.dropout), and it has none; fix: search one of them"
        )


def pbt_of(config: Config, stage: int, ranges: Mapping[str, Dimension]) -> PBT | None:
    """The stage's population-based training (None: its trials train independently)."""
    if config.search.stage[stage].mode != "pbt":
        return None
    cfg = config.search.pbt
    return PBT(
        every=cfg.every,
        quantile=cfg.quantile,
        resample=cfg.resample,
        perturb=tuple(cfg.perturb),
        space=explorable(ranges),
        seed=config.search.seed,
    )


@dataclass
class _Member:
    """One trial trained as a population member."""

    trial: optuna.Trial
    spec: TrialSpec
    report: Reporter


def run_population(
    worker: Worker,
    config: Config,
    task: Task,
    *,
    first: int,
    on_trial: Callable[[FrozenTrial], None],
) -> bool:
    """Take up to ``first`` (else ``CHUNK``) waiting trials, train them at once, tell each
    how it ended (``on_trial`` after each); whether any ran."""
    members: list[_Member] = []
    pbt: PBT | None = None
    while len(members) < (first or CHUNK):
        claimed = worker.claim()
        if claimed is None:
            break
        trial, spec = claimed
        trial.set_user_attr(EXECUTOR, "population")
        if not members:  # one stage at a time: the master queues stage by stage
            pbt = pbt_of(config, spec.stage, worker.ranges(spec.stage))
        report = Reporter(trial, epochs=spec.epochs, direction=worker.direction, prune=pbt is None)
        members.append(_Member(trial, spec, report))
    if not members:
        return False
    epochs = members[0].spec.epochs
    base = config_for(config, {}, epochs=epochs)
    trials_dir = members[0].spec.dir.parent
    # the study's trials/ is no population's own dir: a member's run dir made first keeps
    # train_population from writing its population.json there
    members[0].spec.dir.mkdir(parents=True, exist_ok=True)
    try:
        result = train_population(
            base,
            [m.spec.params for m in members],
            task=task,
            out=trials_dir,
            names=[m.spec.dir.name for m in members],
            on_epoch=lambda epoch, records: _on_epoch(
                members, epoch, records, f"val_{task.metric}"
            ),
            pbt=pbt,
        )
    except (KeyboardInterrupt, SystemExit, StorageUnavailable):
        raise  # the trials stay RUNNING: whoever resumes re-queues them once (slots.py)
    except BaseException as exc:  # as run_trial: each trial failed with the error, re-raised
        for m in members:
            m.trial.set_user_attr("error", f"{type(exc).__name__}: {exc}")
            on_trial(worker.study.tell(m.trial, state=TrialState.FAIL))
        raise
    for member, outcome in zip(members, result.members, strict=True):
        if pbt is not None:
            _record_lineage(member, outcome, members)
        on_trial(_tell(worker.study, member, outcome, f"val_{task.metric}"))
    return True


def _on_epoch(
    members: list[_Member], epoch: int, records: Mapping[int, dict[str, Any]], key: str
) -> Iterable[int]:
    """Report each member's score to its trial (the pruner is asked there); those to stop."""
    return [
        index
        for index, record in records.items()
        if members[index].report.stop_after(float(epoch), float(record[key]))
    ]


def _record_lineage(member: _Member, outcome: MemberResult, members: list[_Member]) -> None:
    """The trial's PBT lineage (sources as trial numbers) and final values, as user attrs."""
    lineage = [
        {**event, "source_trial": members[event["source"]].trial.number}
        for event in outcome.lineage
    ]
    for event in lineage:
        del event["source"]
    member.trial.set_user_attr("pbt_lineage", json_safe(lineage))
    member.trial.set_user_attr("final_params", json_safe(outcome.final))


def _tell(study: optuna.Study, member: _Member, outcome: MemberResult, key: str) -> FrozenTrial:
    """Tell the study how the member's trial ended, as ``run_trial`` tells a trainer's."""
    trial, report = member.trial, member.report
    if report.ended == "pruned":
        trial.set_user_attr("last_score", json_safe(report.last))
        return study.tell(trial, state=TrialState.PRUNED)
    value = outcome.best.get(key)
    if outcome.diverged or report.ended == "diverged":
        trial.set_user_attr("diverged", True)
        trial.set_user_attr("last_score", json_safe(report.last))
        return study.tell(trial, state=TrialState.FAIL)
    if value is None or not math.isfinite(float(value)):
        trial.set_user_attr("error", f"trial {trial.number}: no epoch ended")
        return study.tell(trial, state=TrialState.FAIL)
    return study.tell(trial, float(value))
