"""``babysit.search()``: the stages of a study, trial by trial, then ``summary.json``.

For each ``[[search.stage]]`` (coarse -> fine): ask the stage's trials, run each, then
zoom the ranges around the stage's best trials (or widen them past a border: see
stages.py). With the random sampler the master draws every trial of a stage itself
(seeded by ``search.seed`` and the stage) and enqueues them, so the set of trials tried
does not depend on who runs them; adaptive samplers (tpe, gp) ask as they go and see
every finished trial of the study, earlier stages included.

This version runs the trials in this process, one after the other.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import optuna
from optuna.trial import TrialState, create_trial

from babysit._io import json_safe
from babysit.config import Config, load_config
from babysit.errors import ConfigError
from babysit.training.rundir import check_new_run_dir, default_run_dir
from babysit.tuning.dimensions import Dimension
from babysit.tuning.objective import TrainObjective, trained_epochs
from babysit.tuning.space import parse_space
from babysit.tuning.stages import next_stage
from babysit.tuning.study import ATTR, create_study, quiet_optuna, storage_url
from babysit.tuning.summary import Study, best_of, trial_record
from babysit.tuning.trial import Objective, Runner, TrialSpec, run_trial, user_runner

__all__ = ["PRESAMPLED", "search"]

PRESAMPLED = ("random",)  # samplers whose trials the master draws and enqueues per stage
STUDY_ROOT = Path("runs") / "search"  # default: runs/search/<task>-<YYYYmmdd-HHMMSS>/


def search(
    config: str | os.PathLike[str] | Mapping[str, Any] | Config | None = None,
    *,
    objective: Objective | None = None,
    out: str | os.PathLike[str] | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> Study:
    """Search the config's ``[search.space]`` stage by stage; return the :class:`Study`.

    ``objective(params, report) -> score``: the user's own training, ``params`` by dotted
    key, ``report(epoch, value)`` after each epoch (stages and pruning). Without one each
    trial trains the config with ``babysit.train`` and scores its best validation epoch.
    ``progress`` is called with each finished trial's record. Bad input raises
    ConfigError / TaskError before anything is written.
    """
    cfg = load_config(config)
    space = parse_space(cfg)
    if not space:
        raise ConfigError(
            'search.space is empty: add e.g. "optim.lr" = "loguniform(1e-6, 1e1)" under '
            "[search.space]"
        )
    study_dir = Path(out) if out is not None else default_run_dir(cfg, STUDY_ROOT)
    check_new_run_dir(study_dir)
    url = storage_url(cfg.search.storage, study_dir)
    runner, metric, direction = _runner(cfg, space, objective)
    created = not study_dir.exists()
    study_dir.mkdir(parents=True, exist_ok=True)
    with quiet_optuna():
        try:
            name = study_dir.resolve().name
            study = create_study(
                cfg, study_dir, url=url, name=name, metric=metric, direction=direction
            )
        except BaseException:
            if created:
                shutil.rmtree(study_dir, ignore_errors=True)
            raise
        result = _run_stages(
            study, cfg, space, runner, study_dir, builtin=objective is None, progress=progress
        )
    result.write()
    return result


def _runner(
    cfg: Config, space: Mapping[str, Dimension], objective: Objective | None
) -> tuple[Runner, str, Literal["max", "min"]]:
    """(the runner, the metric's name, the direction): the user's objective or training."""
    if objective is not None:
        return user_runner(objective), "value", cfg.search.direction or "max"
    train_objective = TrainObjective(cfg, space)  # builds the task: TaskError before writing
    direction = _direction(cfg.search.direction or train_objective.direction)
    return train_objective, train_objective.metric, direction


def _direction(name: str) -> Literal["max", "min"]:
    if name not in ("max", "min"):
        raise ConfigError(f"Task.direction {name!r} is unknown: use max or min")
    return "max" if name == "max" else "min"


def _ask(
    study: optuna.Study, cfg: Config, s: int, ranges: Mapping[str, Dimension]
) -> Iterator[optuna.Trial]:
    """The trials of stage ``s``, drawn by the master and enqueued, or asked as they go.

    The random sampler: the master draws every trial of the stage up front. Adaptive
    samplers: the master draws only the narrowed choices (Optuna's categorical
    distributions cannot narrow) and the sampler the rest.
    """
    stage = cfg.search.stage[s]
    attrs = {"stage": s, "epochs": stage.epochs}
    distributions = {key: dim.distribution() for key, dim in ranges.items()}
    rng = np.random.default_rng([cfg.search.seed, s])
    presampled = cfg.search.sampler in PRESAMPLED
    drawn = [key for key, dim in ranges.items() if presampled or dim.narrowed]

    def enqueue() -> None:
        # a waiting trial with its params set (Optuna's enqueue_trial would keep them aside
        # and write each again when asked): one journal write fewer per trial
        params = {key: ranges[key].sample(rng) for key in drawn}
        used = {key: distributions[key] for key in drawn}
        waiting = create_trial(
            state=TrialState.WAITING, params=params, distributions=used, user_attrs=attrs
        )
        study.add_trial(waiting)

    for _ in range(stage.trials if presampled else 0):
        enqueue()
    for _ in range(stage.trials):
        if drawn and not presampled:
            enqueue()
        trial = study.ask(distributions)
        if "stage" not in trial.user_attrs:
            for key, value in attrs.items():
                trial.set_user_attr(key, value)
        yield trial


def _run_stages(
    study: optuna.Study,
    cfg: Config,
    space: Mapping[str, Dimension],
    runner: Runner,
    study_dir: Path,
    *,
    builtin: bool,
    progress: Callable[[dict[str, Any]], None] | None,
) -> Study:
    info = study.user_attrs[ATTR]
    direction: Literal["max", "min"] = info["direction"]
    ranges = dict(space)
    stages: list[dict[str, Any]] = []
    warnings: list[dict[str, Any]] = []
    for s, stage in enumerate(cfg.search.stage):
        record: dict[str, Any] = {"epochs": stage.epochs, "trials": stage.trials}
        record["ranges"] = {key: str(dim) for key, dim in ranges.items()}
        if builtin:
            record["trained_epochs"] = trained_epochs(stage.epochs)
        stages.append(record)
        study.set_user_attr("stages", json_safe(stages))
        for trial in _ask(study, cfg, s, ranges):
            params = {key: ranges[key].decode(trial.params[key]) for key in ranges}
            trial_dir = Path("trials") / f"s{s}-{trial.number}"
            if builtin:
                trial.set_user_attr("dir", trial_dir.as_posix())
            spec = TrialSpec(trial.number, s, stage.epochs, params, study_dir / trial_dir)
            frozen = run_trial(study, trial, spec, runner, direction=direction)
            if progress is not None:
                progress(trial_record(frozen, space))
        done = [
            ({k: space[k].decode(v) for k, v in t.params.items()}, float(t.value))
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.user_attrs.get("stage") == s and t.value is not None
        ]
        ranges, new = next_stage(ranges, done, direction=direction, top_k=cfg.search.top_k)
        warnings += [{**w, "stage": s} for w in new]
        study.set_user_attr("border_warnings", json_safe(warnings))
    trials = [trial_record(t, space) for t in study.get_trials(deepcopy=False)]
    for s, record in enumerate(stages):
        states = [t["state"] for t in trials if t["stage"] == s]
        record["counts"] = {state: states.count(state) for state in sorted(set(states))}
    return Study(
        dir=study_dir,
        best=best_of(trials, direction=direction),
        trials=trials,
        border_warnings=warnings,
        stages=stages,
        study={"name": study.study_name} | {k: info[k] for k in ("storage", "metric", "direction")},
    )
