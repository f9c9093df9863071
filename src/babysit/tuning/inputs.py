"""A search's input, checked before anything is written: config, space, dir, objective.

Bad input raises ConfigError / TaskError (one line): an empty or malformed space (the
config's validator), workers < 1, a non-empty ``--out`` for a new study, ``--resume`` on a
dir that holds no study or with a config other than the study's, an unknown storage
scheme, a task that cannot be built, an objective that workers could not import.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import optuna
from optuna.storages import BaseStorage

from babysit.config import Config, differing_keys, load_config
from babysit.errors import ConfigError
from babysit.training.rundir import check_new_run_dir, check_unlocked, default_run_dir
from babysit.tuning.dimensions import Dimension
from babysit.tuning.objective import TrainObjective
from babysit.tuning.space import parse_space
from babysit.tuning.study import open_storage, open_study, quiet_optuna, storage_url
from babysit.tuning.trial import Objective, Runner
from babysit.tuning.worker import BUILTIN, objective_ref, runner_for

__all__ = ["STUDY_ROOT", "Setup", "prepare"]

STUDY_ROOT = Path("runs") / "search"  # default: runs/search/<task>-<YYYYmmdd-HHMMSS>/


@dataclass(frozen=True)
class Setup:
    """A checked search: what the master runs."""

    config: Config
    space: dict[str, Dimension]
    dir: Path
    url: str  # the storage URL
    runner: Runner
    metric: str
    direction: Literal["max", "min"]
    objective: str | None  # as the study records it: BUILTIN, "module:fn", or None


Opened = tuple[optuna.Study, BaseStorage]


def prepare(
    config: str | os.PathLike[str] | Mapping[str, Any] | Config | None,
    *,
    objective: Objective | str | None,
    out: str | os.PathLike[str] | None,
    workers: int,
    storage: str | None,
    resume: bool,
) -> tuple[Setup, Opened | None]:
    """The checked setup, and the study with its storage when resuming (else None)."""
    if workers < 1:
        raise ConfigError(f"workers = {workers}: give at least one worker (--workers K, K >= 1)")
    given = None if config is None and resume else load_config(config)
    if given is not None and storage is not None:
        given.search.storage = storage
    if resume:
        cfg, study_dir, opened, info = _open(given, out, storage)
        recorded = info.get("objective")
    else:
        assert given is not None
        cfg, opened = given, None
        study_dir = Path(out) if out is not None else default_run_dir(cfg, STUDY_ROOT)
        check_unlocked(study_dir)  # a master at work there: say so, not "not empty"
        check_new_run_dir(study_dir)
        recorded = BUILTIN if objective is None else objective_ref(objective)
    space = parse_space(cfg)
    if not space:
        raise ConfigError(
            'search.space is empty: add e.g. "optim.lr" = "loguniform(1e-6, 1e1)" under '
            "[search.space]"
        )
    if objective is None and recorded is None:
        raise ConfigError(
            f"--resume: the study in {study_dir} ran a Python objective: pass it again "
            "(babysit.search(..., objective=fn, resume=True))"
        )
    ref = recorded if objective is None else objective_ref(objective)
    if workers > 1 and ref is None:
        raise ConfigError(
            "workers > 1 run trials in other processes, which must import the objective: "
            "give a module-level function or 'pkg.module:fn' / 'file.py:fn' (a lambda or a "
            "nested function runs only with workers=1)"
        )
    url = storage_url(cfg.search.storage, study_dir)
    runner = runner_for(cfg, space, objective if objective is not None else recorded)
    metric, direction = _score(cfg, runner)
    setup = Setup(cfg, space, study_dir, url, runner, metric, direction, recorded)
    return setup, opened


def _score(cfg: Config, runner: Runner) -> tuple[str, Literal["max", "min"]]:
    """(the metric's name, the direction): the task's when training, else "value", max."""
    metric, name = "value", str(cfg.search.direction or "max")
    if isinstance(runner, TrainObjective):
        metric, name = runner.metric, cfg.search.direction or runner.direction
    if name not in ("max", "min"):
        raise ConfigError(f"Task.direction {name!r} is unknown: use max or min")
    return metric, "max" if name == "max" else "min"


def _open(
    given: Config | None, out: str | os.PathLike[str] | None, storage: str | None
) -> tuple[Config, Path, Opened, dict[str, Any]]:
    """The study in ``out`` to resume: (its config, its dir, (study, storage), its info)."""
    if out is None:
        raise ConfigError("--resume needs --out DIR, the study directory to continue")
    study_dir = Path(out)
    check_unlocked(study_dir)  # its master still runs: one line naming its PID
    url = storage_url(storage or (given.search.storage if given else None), study_dir)
    local = url.removeprefix("journal://") if url.startswith("journal://") else None
    if url.startswith("sqlite:///"):
        local = url.removeprefix("sqlite:///")
    if local is not None and not Path(local).is_file():
        raise ConfigError(f"--resume: {study_dir} holds no study ({local} does not exist)")
    with quiet_optuna():
        backend = open_storage(url)
        study, saved, info = open_study(backend, url=url, name=study_dir.resolve().name)
    if given is not None and given != saved:
        keys = ", ".join(differing_keys(saved.to_dict(), given.to_dict()))
        raise ConfigError(
            f"--resume: the config differs from the study's in {keys}; resume with the "
            "study's own config (or leave CONFIG out)"
        )
    return saved, study_dir, (study, backend), info
