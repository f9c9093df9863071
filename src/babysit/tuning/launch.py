"""Where the master's workers run: ``BACKENDS`` (``local`` processes, ``ray`` actors).

``local``: K ``python -m babysit worker --storage URL --study-name NAME`` processes on
this machine, each in its own process group (a Ctrl-C reaches the master only, which
stops them), each watching that its master lives (``--parent``: a worker whose master
was killed exits). The master calls :meth:`LocalWorkers.check` every poll: a worker that
died of a signal (SIGKILL, the OOM killer) is replaced, and its trial, left RUNNING, is
failed and re-queued by the master's orphan sweep (slots.py: its slot up to RETRIES
times); a worker that exited
with an error (the objective raised) stops the search with :class:`WorkerError`. Each
worker's output goes to its own ``workers/worker-<i>.log`` in the study dir (numbered on
past the logs of an earlier master of the same study).

``ray``: K Ray actors on a Ray cluster (_ray_workers.py), the one backend that takes
``--address``; with ``--workers 1`` every backend runs the trials in the master's process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from babysit._registry import Registry
from babysit.errors import ConfigError

__all__ = ["BACKENDS", "Backend", "LocalWorkers", "Pool", "WorkerError", "sigterm_interrupts"]

LOG_DIR = "workers"
STOP_WAIT = 10.0  # seconds a stopped worker gets to exit before it is killed


class WorkerError(RuntimeError):
    """A worker process failed (its objective raised, or workers keep dying)."""


class Pool(Protocol):
    """The workers a backend started for one study."""

    def check(self) -> None:
        """Replace dead workers; WorkerError when one failed."""

    def stop(self) -> None:
        """Stop every worker now (the master interrupted or failed)."""

    def finish(self) -> None:
        """Let the workers see the study done and exit; stop the rest."""


Start = Callable[[str, str, int, Path], Pool]


@dataclass(frozen=True)
class Backend:
    """How to start ``count`` workers on study ``name`` in ``url``, logging under ``logs``.

    ``start`` None: not available, for the reason ``why_not``. ``connect``: for a backend
    that takes ``--address``, the address -> its ``start`` (ConfigError when it cannot run,
    e.g. its package is missing), called before anything is written.
    """

    start: Start | None
    why_not: str = ""
    connect: Callable[[str | None], Start] | None = None

    def starter(self, name: str, address: str | None = None) -> Start:
        if self.connect is not None:
            return self.connect(address)
        if address is not None:
            raise ConfigError(
                f"--address {address}: only --backend ray takes an address "
                f"(--backend {name} starts its workers on this machine)"
            )
        if self.start is None:
            raise ConfigError(f"--backend {name} is not available yet: {self.why_not}")
        return self.start


class LocalWorkers:
    """``count`` worker processes on this machine; replaced when they die."""

    def __init__(self, url: str, name: str, count: int, logs: Path) -> None:
        self.command = [sys.executable, "-m", "babysit", "worker", "--storage", url]
        self.command += ["--study-name", name, "--parent", str(os.getpid()), "--quiet"]
        self.count, self.logs = count, logs
        self.procs: dict[subprocess.Popen[bytes], Path] = {}
        self.started = 0
        logs.mkdir(parents=True, exist_ok=True)
        self.first = len(list(logs.glob("worker-*.log")))  # a resumed study keeps the old logs
        for _ in range(count):
            self._spawn()

    def _spawn(self) -> None:
        log = self.logs / f"worker-{self.first + self.started}.log"
        self.started += 1
        with log.open("ab") as out:  # the child keeps its own handle
            proc = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs[proc] = log

    def check(self) -> None:
        for proc, log in list(self.procs.items()):
            code = proc.poll()
            if code is None:
                continue
            del self.procs[proc]
            if code > 0:  # it raised (a signal gives a negative code)
                lines = log.read_text(errors="replace").strip().splitlines() or ["(no output)"]
                raise WorkerError(
                    f"worker {proc.pid} stopped with exit code {code}: {lines[-1]} (log: {log})"
                )
            if self.started >= 4 * self.count + 4:
                raise WorkerError(f"workers keep dying ({self.started} started); see {self.logs}")
            self._spawn()

    def stop(self) -> None:
        """SIGTERM each worker's process group; SIGKILL what is left after STOP_WAIT."""
        for proc in self.procs:
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + STOP_WAIT
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait()
        self.procs.clear()

    def finish(self, timeout: float = STOP_WAIT) -> None:
        """Wait for the workers to see the study done and exit; stop the rest."""
        deadline = time.monotonic() + timeout
        while any(p.poll() is None for p in self.procs) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.stop()


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


BACKENDS: Registry[Backend] = Registry("backend", error=ConfigError)
BACKENDS.add("local", Backend(LocalWorkers))


def _ray(address: str | None) -> Start:
    from babysit.tuning._ray_workers import ray_starter  # imports ray only when it runs

    return ray_starter(address)


BACKENDS.add("ray", Backend(None, connect=_ray))


@contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """Within: SIGTERM raises KeyboardInterrupt, so the master stops its workers on the way
    out (main thread only; elsewhere signals cannot be handled)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
