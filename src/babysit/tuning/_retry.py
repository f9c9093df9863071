"""Database storage that rides out a restart: every call retried, with backoff, bounded.

A PostgreSQL server restarted (or failed over) under a running search breaks every open
connection: the next query raises SQLAlchemy's ``OperationalError``, which Optuna's
``RDBStorage`` wraps in ``StorageInternalError``. Without help that error ends the
master's poll, a worker's loop or its heartbeat thread. ``RetryingRDBStorage`` (_rdb.py)
is ``RDBStorage`` with each call that reaches the database passed through
:func:`retry_call`, retried on a *connection* error, so the master, the workers and the
heartbeat all wait the same way, in this one place.

Backoff: after the k-th failure of a call (k = 0, 1, ...) it sleeps
``min(BACKOFF_CAP, BACKOFF_FIRST * 2**k) * u`` seconds, u uniform in [0.5, 1) (jitter, so
K workers do not reconnect in lockstep): 0.5, 1, 2, 4, 8, 10, 10, ... s. A call gives up
once ``patience`` seconds have passed since its first failure and raises
:class:`StorageUnavailable`, a BabysitError: the CLI prints it as one line and exits 2.
``patience`` None waits without bound (a local worker: its master bounds the wait and
stops it). The connection pool pings a connection before using it (``pool_pre_ping``),
so once the server is back the first call reconnects instead of failing once more.

Retried: errors of the connection, not of the request — psycopg2 errors without a
SQLSTATE (connection refused, server closed the connection) or of class 08 (connection
exception) or 57 (operator intervention: shutdown, starting up), and SQLAlchemy's
PendingRollbackError that follows them on the same session; SQLite's "database is
locked". Before each retry the thread's session is dropped (a fresh one reconnects).
A wrong password (28...), a missing database (3D000) or a bad query fail at once.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from babysit.errors import BabysitError, ConfigError

__all__ = [
    "BACKOFF_CAP",
    "BACKOFF_FIRST",
    "PATIENCE",
    "PATIENCE_ENV",
    "Outage",
    "StorageUnavailable",
    "env_seconds",
    "is_transient",
    "retry_call",
    "safe_url",
]

PATIENCE = 300.0  # seconds a call keeps retrying before the search stops (one line, exit 2)
PATIENCE_ENV = "BABYSIT_STORAGE_PATIENCE"  # overrides PATIENCE (seconds)
BACKOFF_FIRST = 0.5  # seconds before the first retry
BACKOFF_CAP = 10.0  # the longest wait between two tries
_RETRIED_SQLSTATE_CLASSES = ("08", "57")  # connection exception, operator intervention
_log = logging.getLogger("babysit.storage")
T = TypeVar("T")


class StorageUnavailable(BabysitError):
    """The study's database did not answer within the patience (the study is kept)."""


def env_seconds(name: str, default: float) -> float:
    """The positive number of seconds in environment variable ``name``, else ``default``."""
    text = os.environ.get(name)
    if text is None or not text.strip():
        return default
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0:
        raise ConfigError(f"{name}={text!r}: expected a positive number of seconds")
    return value


def safe_url(url: str) -> str:
    """``url`` with its password hidden (it goes into messages and logs)."""
    try:
        from sqlalchemy.engine import make_url

        parsed = make_url(url)
        return url if parsed.password is None else parsed.render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy can parse: hide what may be credentials
        return url if "@" not in url else url.split("://")[0] + "://***"


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it wraps) means the connection, not the request, failed."""
    import sqlalchemy.exc

    seen: BaseException | None = exc
    for _ in range(32):  # the chain of causes (a bound: a chain can loop)
        if seen is None:
            return False
        if isinstance(seen, sqlalchemy.exc.PendingRollbackError):
            return True  # a session still holding the transaction a lost connection broke
        if isinstance(seen, sqlalchemy.exc.DBAPIError):
            if seen.connection_invalidated:
                return True
            if isinstance(seen, sqlalchemy.exc.OperationalError | sqlalchemy.exc.InterfaceError):
                code = getattr(seen.orig, "pgcode", None)
                if "sqlite" in type(seen.orig).__module__:
                    return "locked" in str(seen.orig) or "busy" in str(seen.orig)
                return code is None or code[:2] in _RETRIED_SQLSTATE_CLASSES
            return False
        seen = seen.__cause__ or seen.__context__  # raised from it, or while handling it
    return False


class Outage:
    """When the database stopped answering (one notice per outage, not per call)."""

    def __init__(self, url: str) -> None:
        self.url, self.lock = url, threading.Lock()
        self.since: float | None = None

    def failed(self, exc: BaseException, patience: float | None) -> None:
        with self.lock:
            if self.since is None:
                self.since = time.monotonic()
                bound = "until its master stops" if patience is None else f"up to {patience:g} s"
                _log.warning(
                    "babysit: the database %s does not answer (%s); retrying for %s",
                    self.url, _short(exc), bound,
                )  # fmt: skip

    def answered(self) -> None:
        if self.since is None:
            return
        with self.lock:
            if self.since is not None:
                _log.warning(
                    "babysit: the database answers again after %.1f s",
                    time.monotonic() - self.since,
                )
                self.since = None


def _short(exc: BaseException) -> str:
    """The root cause's first line: ``OperationalError: connection refused``."""
    root = exc
    while root.__cause__ is not None:
        root = root.__cause__
    inner = getattr(root, "orig", None) or root
    text = str(inner).strip().splitlines() or [""]
    return f"{type(inner).__name__}: {text[0]}"


def retry_call(
    call: Callable[[], T],
    *,
    patience: float | None,
    url: str,
    outage: Outage | None = None,
    recover: Callable[[], T | None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """``call()``, retried on transient errors with backoff until ``patience`` runs out.

    ``recover()``, asked before each retry, returns the call's result when the failed try
    did its work after all (the server died after committing), else None.
    """
    first: float | None = None
    failures = 0
    while True:
        try:
            if failures and recover is not None:
                done = recover()
                if done is not None:
                    return done
            result = call()
        except Exception as exc:
            if not is_transient(exc):
                raise
            now = clock()
            first = now if first is None else first
            if outage is not None:
                outage.failed(exc, patience)
            if patience is not None and now - first >= patience:
                raise StorageUnavailable(
                    f"--storage {url}: the database has not answered for {patience:g} s "
                    f"({_short(exc)}); the study is kept there: once the server is back, "
                    "continue with `babysit search ... --resume` (patience: "
                    f"{PATIENCE_ENV}={patience:g})"
                ) from None
            wait = min(BACKOFF_CAP, BACKOFF_FIRST * 2.0**failures) * random.uniform(0.5, 1.0)
            if patience is not None:
                wait = min(wait, max(0.0, first + patience - now))
            failures += 1
            sleep(wait)
            continue
        if outage is not None:
            outage.answered()
        return result
