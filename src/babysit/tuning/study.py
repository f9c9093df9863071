"""The Optuna study behind a search: storage, samplers, pruners, and what a worker needs.

Storage, by the URL's scheme (``search.storage`` / ``--storage``):

- none (default): ``journal.log`` in the study dir, Optuna's ``JournalStorage`` on a
  ``JournalFileBackend`` (append-only; a line torn by a process killed mid-write is cut
  before the next append, so it loses nothing else: _journal.py);
  written as ``journal:///abs/path/journal.log`` where a URL is needed;
- ``sqlite:///path/study.db``: one machine;
- ``postgresql://user:pass@host/db``: many machines (needs a PostgreSQL driver).

The journal has no heartbeat: the master watches the worker processes it starts
(launch.py). RDB storages get Optuna's heartbeat: a worker records one every
``HEARTBEAT`` seconds while its trial runs, and a trial silent for ``GRACE`` seconds is
failed and re-queued by the master (``RetryHeartbeatStaleTrialCallback(max_retry=1)``
re-queues each lost try once, as the master does a dead local worker's trial; a slot
lost again is re-queued by slots.py's count, up to ``RETRIES`` times). The environment
variables ``BABYSIT_HEARTBEAT`` and ``BABYSIT_GRACE`` (seconds) change them; every
process on the study must use the same values. RDB storages retry a call whose
connection failed (a server restart) with backoff, for up to ``BABYSIT_STORAGE_PATIENCE``
seconds (_retry.py).

A study is a plain Optuna study: ``optuna.load_study(study_name=NAME, storage=STORAGE)``
reads it and ``optuna-dashboard sqlite:///study.db`` (or the journal file's path) shows it.
The resolved config, the study dir, the metric and the direction are kept in the study's
user attribute ``"babysit"`` (with ``objective``: ``"builtin"``, an importable
``"module:fn"`` / ``"file.py:fn"``, or None for a Python callable no other process can
import); the stages' ranges and border warnings in ``"stages"`` and ``"border_warnings"``,
and ``"done": true`` once the master has finished — so a worker given only
``--storage URL --study-name NAME`` finds everything (:func:`open_study`).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import optuna
from optuna.pruners import BasePruner
from optuna.samplers import BaseSampler
from optuna.storages import BaseStorage

from babysit._io import json_restore, json_safe
from babysit._registry import Registry
from babysit.config import Config
from babysit.errors import ConfigError
from babysit.tuning._journal import SealedJournalFileBackend
from babysit.tuning._rdb import RetryingRDBStorage as RetryingRDBStorage
from babysit.tuning._retry import (
    PATIENCE,
    PATIENCE_ENV,
    StorageUnavailable,
    env_seconds,
    safe_url,
)

__all__ = [
    "ATTR",
    "DONE",
    "GRACE",
    "HEARTBEAT",
    "JOURNAL_FILE",
    "PRUNERS",
    "SAMPLERS",
    "STORAGES",
    "RetryingRDBStorage",
    "StorageUnavailable",
    "create_study",
    "open_storage",
    "open_study",
    "quiet_optuna",
    "safe_url",
    "storage_url",
]

JOURNAL_FILE = "journal.log"
ATTR = "babysit"  # the study's user attribute: {config, dir, metric, direction, storage, objective}
DONE = "done"  # the study's user attribute the master sets when the search is over
HEARTBEAT = 30  # seconds between a worker's heartbeats (RDB storages); BABYSIT_HEARTBEAT
GRACE = 90  # seconds without a heartbeat before a trial counts as lost; BABYSIT_GRACE
OPTUNA_DIRECTION: dict[str, Literal["maximize", "minimize"]] = {
    "max": "maximize",
    "min": "minimize",
}

# --- samplers (seeded) -------------------------------------------------------------------
SAMPLERS: Registry[Callable[[int], BaseSampler]] = Registry("sampler", error=ConfigError)


def _random(seed: int) -> BaseSampler:
    """The notes and Bergstra & Bengio: random search (the master enqueues its samples)."""
    return optuna.samplers.RandomSampler(seed=seed)


SAMPLERS.add("random", _random)


def _tpe(seed: int) -> BaseSampler:
    """Tree-structured Parzen estimator (Bergstra et al. 2011, the notes' Hyperopt)."""
    return optuna.samplers.TPESampler(seed=seed)


SAMPLERS.add("tpe", _tpe)


def _gp(seed: int) -> BaseSampler:
    """Gaussian-process Bayesian optimization (the notes' Spearmint family)."""
    return optuna.samplers.GPSampler(seed=seed)


SAMPLERS.add("gp", _gp)


# --- pruners (fed by report(epoch, value); off by default) -------------------------------
PRUNERS: Registry[Callable[[], BasePruner]] = Registry("pruner", error=ConfigError)


def _nop() -> BasePruner:
    return optuna.pruners.NopPruner()


PRUNERS.add("none", _nop)


def _median() -> BasePruner:
    """Stop a trial whose best score so far is worse than the median of the others' at that
    epoch (after 5 trials have finished)."""
    return optuna.pruners.MedianPruner(n_startup_trials=5)


PRUNERS.add("median", _median)


def _successive_halving() -> BasePruner:
    return optuna.pruners.SuccessiveHalvingPruner()


PRUNERS.add("sh", _successive_halving)


def _hyperband() -> BasePruner:
    return optuna.pruners.HyperbandPruner()


PRUNERS.add("hyperband", _hyperband)


# --- storages, by URL scheme -------------------------------------------------------------
# a storage from its URL and the patience of its calls (seconds; None: unbounded)
STORAGES: Registry[Callable[[str, float | None], BaseStorage]] = Registry(
    "storage", error=ConfigError
)


def _journal(url: str, patience: float | None) -> BaseStorage:
    """The journal file (a local file: no connection to retry); a torn last line, left by
    a writer killed mid-write, is cut before the next append (_journal.py)."""
    from optuna.storages.journal import JournalStorage

    return JournalStorage(SealedJournalFileBackend(url.removeprefix("journal://")))


STORAGES.add("journal", _journal)


def _rdb(url: str, patience: float | None) -> BaseStorage:
    retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)
    heartbeat = round(env_seconds("BABYSIT_HEARTBEAT", HEARTBEAT)) or 1  # Optuna: whole s
    grace = max(round(env_seconds("BABYSIT_GRACE", GRACE)), heartbeat + 1)
    try:
        return RetryingRDBStorage(
            url,
            patience=patience,
            heartbeat_interval=heartbeat,
            grace_period=grace,
            heartbeat_stale_trial_callback=retry,
        )
    except ImportError as exc:
        raise ConfigError(f"--storage {url}: its database driver is missing ({exc})") from None


STORAGES.add("sqlite", _rdb)
STORAGES.add("postgresql", _rdb)


def _scheme(url: str) -> str:
    return url.partition(":")[0].partition("+")[0]  # "postgresql+psycopg2" -> "postgresql"


def storage_url(storage: str | None, study_dir: Path) -> str:
    """The study's storage URL: ``storage``, else the journal file in ``study_dir``.

    Raises ConfigError for an unknown scheme, before anything is written.
    """
    if storage is None:
        return f"journal://{(study_dir / JOURNAL_FILE).resolve()}"
    if "://" not in storage:
        raise ConfigError(
            f"--storage {storage!r}: expected a URL such as sqlite:///study.db or "
            "postgresql://user@host/db (leave it out for the journal file in the study dir)"
        )
    STORAGES.get_or_raise(_scheme(storage), where=f"--storage {storage}")
    return storage


def open_storage(url: str, *, bounded: bool = True) -> BaseStorage:
    """The storage at ``url``. A database's calls are retried on connection errors for
    ``BABYSIT_STORAGE_PATIENCE`` seconds (else 300), then raise :class:`StorageUnavailable`;
    ``bounded=False``: retried without bound (a process whose master bounds the wait)."""
    patience = env_seconds(PATIENCE_ENV, PATIENCE) if bounded else None
    with quiet_optuna():
        return STORAGES.get_or_raise(_scheme(url), where=f"--storage {url}")(url, patience)


@contextmanager
def quiet_optuna() -> Iterator[None]:
    """Optuna logs every trial (INFO) and its samplers' fallbacks (WARNING), and warns
    about its experimental heartbeat API; library code does not print, so silence them
    meanwhile (errors still show)."""
    logger = logging.getLogger("optuna")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        logger.setLevel(level)


def create_study(
    config: Config,
    study_dir: Path,
    storage: BaseStorage,
    *,
    url: str,
    name: str,
    metric: str,
    direction: Literal["max", "min"],
    objective: str | None,
) -> optuna.Study:
    """A new study in ``storage`` (at ``url``) holding what a worker needs in its attributes."""
    search = config.search
    try:
        study = optuna.create_study(
            storage=storage,
            study_name=name,
            direction=OPTUNA_DIRECTION[direction],
            sampler=SAMPLERS[search.sampler](search.seed),
            pruner=PRUNERS[search.pruner](),
        )
    except optuna.exceptions.DuplicatedStudyError:
        raise ConfigError(
            f"--storage {url}: a study named {name!r} exists there already; "
            "choose another --out (the study is named after it)"
        ) from None
    info = {
        "config": config.to_dict(),
        "dir": str(study_dir.resolve()),
        "metric": metric,
        "direction": direction,
        "storage": safe_url(url),  # shown in summary.json: no password
        "objective": objective,
    }
    study.set_user_attr(ATTR, json_safe(info))
    return study


def open_study(
    storage: BaseStorage, *, url: str, name: str
) -> tuple[optuna.Study, Config, dict[str, Any]]:
    """(the study with its sampler and pruner, its config, its ``"babysit"`` attribute)."""
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        raise ConfigError(f"--storage {url}: no study named {name!r} there") from None
    info = json_restore(study.user_attrs.get(ATTR))
    if not isinstance(info, dict):
        raise ConfigError(f"--storage {url}: study {name!r} was not made by babysit search")
    config = Config.from_dict(info["config"], source=f"study {name!r}")
    study.sampler = SAMPLERS[config.search.sampler](config.search.seed)
    study.pruner = PRUNERS[config.search.pruner]()
    return study, config, info
