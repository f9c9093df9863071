"""``--backend ray``: the search's workers as Ray actors on a Ray cluster.

Connecting: ``--address HOST:PORT`` (a cluster's head, as ``ray start --head`` prints it)
or ``auto`` (the cluster ``ray start`` made on this machine) is passed to ``ray.init``.
A process that is already connected (``ray.init`` called before ``babysit.search``)
uses that connection. Else, without ``--address``, ``ray.init()`` joins the cluster
named by ``RAY_ADDRESS``, or starts a Ray instance on this machine for this search
alone, shut down at the end (never a cluster ``ray start`` left running here: that is
``--address auto``). Each worker is an actor holding ``[search.resources]``
(``cpus``, ``gpus``) of one node, spread over the nodes, running the same
:class:`Worker` loop as ``babysit worker`` on the study's storage. Ray copies no data:
every node needs babysit, the objective's module, the data, and the study dir at the
same path (a shared file system), and the storage must be reachable from every node:
PostgreSQL, or the journal file on a file system all nodes share (docs/cluster.md).

Lost trials. A worker stamps each trial it takes with its actor id and node id
(``user_attrs["worker"]["ray"|"node"]``, with the host and pid that local workers
stamp). The master holds the handles of its actors and waits on each one's ``run`` call
(``ray.wait``, every poll): a call that returns ended with the study; one that raised in
the objective stops the search (:class:`WorkerError`); one whose actor died (its process
killed, its node removed or its raylet killed: Ray fails the call once it sees the node
gone) counts as lost. Then, and once when the pool starts (``--resume``: the actors of
a killed master died with it, as Ray kills an owner's actors), every RUNNING trial
stamped by an actor that is not one of this master's live actors is failed and
re-queued (slots.py: a loss with the master is free, a slot lost with its worker is
re-queued up to RETRIES times), and a new actor takes the dead one's place. The FAIL
is a state change the storage makes once: whoever else sees the trial lost first (the pid check of
slots.py for actors on this host, the RDB heartbeat) re-queues it instead, never both.
An actor that was only cut off and still runs its trial is refused by the storage (the
trial is FAIL) and goes on to the next one (``Worker.run_one``): the trial counts
once, by its retry, and the search goes on. A trial taken but not yet stamped when its
actor died is caught by slots.py's ``ORPHAN_AFTER`` rule. ``workers/ray.log`` in the
study dir records each actor started and lost, and each trial re-queued by this watch.
"""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from babysit.errors import ConfigError
from babysit.tuning.launch import STOP_WAIT, Start, WorkerError
from babysit.tuning.slots import TrialQueue, owner_of
from babysit.tuning.study import open_storage, open_study, quiet_optuna

__all__ = ["INSTALL", "RayWorkers", "ray_starter"]

INSTALL = "install the ray extra: pip install 'babysit[ray]'"
LOG = "ray.log"
CONNECT_TIMEOUT = 10.0  # seconds to reach --address HOST:PORT before giving up


def ray_starter(address: str | None) -> Start:
    """The ray backend's start; ConfigError (one line) when ray cannot be imported."""
    try:
        import ray  # noqa: F401
    except ImportError:
        raise ConfigError(f"--backend ray: {INSTALL}") from None
    if address is not None:
        _check_listening(address)  # before anything is written
    return functools.partial(RayWorkers, address=address)


class RayWorker:
    """One worker on a Ray node (RayWorkers makes it an actor)."""

    def run(self, url: str, name: str, master: int) -> int:
        """Run the study's trials until the master (PID ``master``) marks it done; the
        number run. The stamp names the master: a resumed one counts the trials lost with
        its predecessor as lost with the master, not against their slots."""
        import ray

        from babysit.tuning.worker import open_worker

        # unbounded: while the database is down the master bounds the wait and stops us
        worker = open_worker(url, name, bounded=False)
        context = ray.get_runtime_context()
        worker.queue.stamp = {"ray": context.get_actor_id(), "node": context.get_node_id()}
        worker.queue.master = master
        return worker.run()


class RayWorkers:
    """``count`` RayWorker actors on study ``name`` in ``url``; replaced when they die."""

    def __init__(
        self, url: str, name: str, count: int, logs: Path, *, address: str | None = None
    ) -> None:
        import ray

        self.url, self.name, self.count = url, name, count
        self.owned = False  # whether this pool started Ray, and so shuts it down
        self.runs: dict[Any, tuple[Any, str]] = {}  # run() ref -> (actor handle, actor id)
        self.started, self.swept = 0, False
        if not ray.is_initialized():
            _connect(address)
            self.owned = True
        try:
            with quiet_optuna():
                storage = open_storage(url)
                study, config, _ = open_study(storage, url=url, name=name)
            self.queue = TrialQueue(study, storage)
            res = config.search.resources
            _check_fits(res.cpus, res.gpus, address)
            self.actor: Any = ray.remote(RayWorker).options(
                num_cpus=res.cpus, num_gpus=res.gpus, max_restarts=0, scheduling_strategy="SPREAD"
            )
            logs.mkdir(parents=True, exist_ok=True)
            self.log = logs / LOG
            for _ in range(count):
                self._spawn()
        except BaseException:
            self.stop()
            raise

    def _spawn(self) -> None:
        handle = self.actor.remote()
        actor_id = handle._actor_id.hex()
        self.runs[handle.run.remote(self.url, self.name, os.getpid())] = (handle, actor_id)
        self.started += 1
        self._note(f"worker {actor_id} started")

    def _note(self, line: str) -> None:
        with self.log.open("a") as out:
            out.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")

    def check(self) -> None:
        """Reap ended actors: an objective's error raises WorkerError; a dead actor's
        trials are re-queued (the module docstring) and the actor replaced."""
        import ray

        ready: list[Any] = []
        if self.runs:
            ready, _ = ray.wait(list(self.runs), num_returns=len(self.runs), timeout=0)
        dead = []
        for ref in ready:
            _, actor_id = self.runs.pop(ref)
            try:
                ray.get(ref)
            except ray.exceptions.RayTaskError as exc:
                cause = exc.cause if exc.cause is not None else exc
                lines = str(cause).strip().splitlines() or [type(cause).__name__]
                raise WorkerError(
                    f"ray worker {actor_id} failed: {type(cause).__name__}: {lines[-1]}"
                ) from None
            except ray.exceptions.RayError as exc:
                dead.append(actor_id)
                why = (str(exc).strip().splitlines() or ["died"])[0]
                self._note(f"worker {actor_id} lost: {why}")
        if dead or not self.swept:
            self._sweep()
        for _ in dead:
            if self.started >= 4 * self.count + 4:
                raise WorkerError(
                    f"ray workers keep dying ({self.started} started); see {self.log}"
                )
            self._spawn()

    def _sweep(self) -> None:
        """Fail and re-queue once every RUNNING trial of an actor not among ours alive."""
        alive = {actor_id for _, actor_id in self.runs.values()}

        def orphan(trial: FrozenTrial) -> bool:
            owner = owner_of(trial)
            return owner is not None and "ray" in owner and owner["ray"] not in alive

        with quiet_optuna():
            running = self.queue.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            for number in self.queue.requeue_orphans(running, orphan):
                self._note(f"trial {number} lost with its worker: failed, queued once more")
        self.swept = True

    def stop(self) -> None:
        """Kill every actor (a trial it ran stays RUNNING: ``--resume`` re-queues it)."""
        import ray

        for handle, _ in self.runs.values():
            ray.kill(handle, no_restart=True)
        self.runs.clear()
        if self.owned and ray.is_initialized():
            ray.shutdown()
            self.owned = False

    def finish(self, timeout: float = STOP_WAIT) -> None:
        """Wait for the actors to see the study done and return; stop the rest."""
        import ray

        if self.runs:
            ray.wait(list(self.runs), num_returns=len(self.runs), timeout=timeout)
        self.stop()


def _connect(address: str | None) -> None:
    """``ray.init``: the cluster at ``address``, else RAY_ADDRESS's, else a new local one."""
    import logging
    import os

    import ray

    kwargs: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.ERROR}
    if address is None and not os.environ.get("RAY_ADDRESS"):
        address = "local"  # not a cluster `ray start` left on this machine: say --address auto
        kwargs["include_dashboard"] = False
    try:
        ray.init(address=address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"--address {address}" if address else "ray.init()"
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(f"--backend ray: {where}: no Ray cluster to join: {first}") from None


def _check_listening(address: str, timeout: float = CONNECT_TIMEOUT) -> None:
    """ConfigError unless something listens at ``HOST:PORT`` (``ray.init`` would retry an
    address where nothing listens for minutes); ``auto`` and ``ray://`` are Ray's to check."""
    import socket

    host, sep, port = address.rpartition(":")
    if address == "auto" or address.startswith("ray://"):
        return
    if not sep or not host.strip() or not port.isdigit():
        raise ConfigError(f"--address {address}: expected auto or HOST:PORT of the Ray head")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ConfigError(
            f"--address {address}: no Ray head answers there ({exc.strerror or exc}); "
            "start one with `ray start --head --port PORT`"
        ) from None


def _check_fits(cpus: float, gpus: float, address: str | None) -> None:
    """ConfigError when no node of the cluster can hold one worker (it would wait forever)."""
    import ray

    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    if any(r.get("CPU", 0) >= cpus and r.get("GPU", 0) >= gpus for r in nodes):
        return
    have = ", ".join(f"{r.get('CPU', 0):g} CPU {r.get('GPU', 0):g} GPU" for r in nodes)
    raise ConfigError(
        f"[search.resources] cpus = {cpus:g}, gpus = {gpus:g}: no node of the Ray cluster "
        f"at {address or 'this machine'} has that much (nodes: {have or 'none'}); lower them"
    )
