"""Optuna's RDBStorage with every database call retried (_retry.py's backoff and bounds).

Each call of ``RDBStorage`` that reaches the database (``_RETRIED``, with the private ones
Optuna's ``_CachedStorage`` calls) goes through :func:`retry_call`; a call made inside a
retried call is not retried again (the outer one is), so the waits never multiply.

Idempotence: a call is retried only when it raised, so it normally did not happen. When
the server died after committing but before answering, the retry finds the work done:
:meth:`set_trial_state_values` of a COMPLETE or PRUNED trial then sees it already so and
returns True, and trial creation finds the trial it made (same user and system
attributes and params) instead of adding a second one. A take (RUNNING) or a FAIL whose
answer was lost is not recovered: the take's trial is re-queued as an orphan (slots.py),
the FAIL's re-queue is done by the master's count of lost first tries.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState

from babysit.tuning._retry import Outage, retry_call, safe_url

__all__ = ["RetryingRDBStorage"]

OWNER_KEY = "worker"  # slots.OWNER: the user attribute a worker's take stamps on a trial

# RDBStorage's calls that reach the database, public and those _CachedStorage calls
_RETRIED = (
    "create_new_study",
    "delete_study",
    "set_study_user_attr",
    "set_study_system_attr",
    "get_study_id_from_name",
    "get_study_name_from_id",
    "get_study_directions",
    "get_study_user_attrs",
    "get_study_system_attrs",
    "get_all_studies",
    "create_new_trial",
    "_create_new_trial",
    "set_trial_param",
    "_set_trial_param",
    "get_trial_param",
    "set_trial_state_values",
    "set_trial_intermediate_value",
    "set_trial_user_attr",
    "set_trial_system_attr",
    "get_trial_id_from_study_id_trial_number",
    "get_trial",
    "get_all_trials",
    "_get_trials",
    "get_best_trial",
    "_get_best_trial_id",
    "record_heartbeat",
    "_get_stale_trial_ids",
)


class RetryingRDBStorage(RDBStorage):
    """Optuna's RDBStorage whose database calls are retried (see the module docstring)."""

    def __init__(self, url: str, *, patience: float | None, **kwargs: Any) -> None:
        self.patience = patience
        self._shown = safe_url(url)
        self._outage = Outage(self._shown)
        self._depth = threading.local()  # a call made by a retried call is not retried again
        engine = dict(kwargs.pop("engine_kwargs", None) or {})
        engine.setdefault("pool_pre_ping", True)
        retry_call(
            lambda: RDBStorage.__init__(self, url, engine_kwargs=engine, **kwargs),
            patience=patience,
            url=self._shown,
            outage=self._outage,
        )

    def _retried(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        method = getattr(RDBStorage, name)
        if getattr(self._depth, "value", 0):
            return method(self, *args, **kwargs)
        recover = _RECOVER.get(name)

        tries = 0

        def call() -> Any:
            nonlocal tries
            if tries:
                self.scoped_session.remove()  # this thread's session: a fresh one, not the broken
            tries += 1
            self._depth.value = 1
            try:
                return method(self, *args, **kwargs)
            finally:
                self._depth.value = 0

        return retry_call(
            call,
            patience=self.patience,
            url=self._shown,
            outage=self._outage,
            recover=None if recover is None else lambda: recover(self, *args, **kwargs),
        )


def _wrap(name: str) -> Callable[..., Any]:
    def method(self: RetryingRDBStorage, *args: Any, **kwargs: Any) -> Any:
        return self._retried(name, args, kwargs)

    method.__name__ = name
    method.__doc__ = getattr(RDBStorage, name).__doc__
    return method


for _name in _RETRIED:
    setattr(RetryingRDBStorage, _name, _wrap(_name))


# --- recovery: the failed try did its work after all -------------------------------------
def _state_already(
    storage: RDBStorage,
    trial_id: int,
    state: TrialState,
    values: Sequence[float] | None = None,
) -> bool | None:
    """True when the trial already is in ``state`` (with ``values``); else None (retry).

    Only the ends that the trial's own worker writes (COMPLETE, PRUNED): a FAIL found there
    may be another process's (the heartbeat sweep), whose re-queue must not be repeated,
    and a RUNNING one another worker's take.
    """
    if state not in (TrialState.COMPLETE, TrialState.PRUNED):
        return None
    trial = RDBStorage.get_trial(storage, trial_id)
    if trial.state != state:
        return None
    if values is not None and list(trial.values or []) != list(values):
        return None
    return True


def _created_trial(
    storage: RDBStorage, study_id: int, template_trial: FrozenTrial | None = None
) -> FrozenTrial | None:
    """The trial a failed create made after all: the one holding the template's params and
    attributes (babysit's templates are unique: a slot's ``{stage, epochs, slot}``, a
    retry's ``failed_trial``). It may have been taken meanwhile, so its state and the
    owner a take stamps on it (``OWNER_KEY``) are not compared."""
    if template_trial is None or not (template_trial.user_attrs or template_trial.system_attrs):
        return None  # nothing tells it from any other new trial
    user = {k: v for k, v in template_trial.user_attrs.items() if k != OWNER_KEY}
    for trial in RDBStorage.get_all_trials(storage, study_id, deepcopy=False):
        if (
            trial.params == template_trial.params
            and user.items() <= trial.user_attrs.items()
            and template_trial.system_attrs.items() <= trial.system_attrs.items()
        ):
            return trial
    return None


def _created_trial_id(
    storage: RDBStorage, study_id: int, template_trial: FrozenTrial | None = None
) -> int | None:
    trial = _created_trial(storage, study_id, template_trial)
    return None if trial is None else trial._trial_id


_RECOVER: dict[str, Callable[..., Any]] = {
    "set_trial_state_values": _state_already,
    "_create_new_trial": _created_trial,
    "create_new_trial": _created_trial_id,
}
