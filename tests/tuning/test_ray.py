"""``--backend ray`` on a real multi-node Ray cluster on this machine (``ray.cluster_utils``):
nodes killed mid-search, a killed master resumed, and the study still ends with each
slot done once; and the one-line answers when ray is missing or resources are bad."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import FrozenTrial, TrialState
from tests.tuning.polling import journal_trials

import babysit
from babysit.tuning.slots import OWNER, owner_of

HERE = Path(__file__).resolve().parent
SRC = Path(babysit.__file__).resolve().parents[1]
OBJECTIVE = f"{HERE / 'objectives.py'}:slow_peak"  # 3 epochs of 0.8 s
STORE = 80 * 2**20  # each node's object store: the workers pass no objects
KILLS = int(os.environ.get("BABYSIT_RAY_KILLS", "2"))  # by hand: more, e.g. 10
FAST_FAILURE = {  # the head sees a dead node in about 1.5 s (the default: 15 s or more)
    "health_check_initial_delay_ms": 1000,
    "health_check_period_ms": 500,
    "health_check_failure_threshold": 3,
}


def _env() -> dict[str, str]:
    path = os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path}


def _run(code: str, *args: str | Path) -> subprocess.Popen[str]:
    """``python -c code args...`` with babysit importable; output piped."""
    command = [sys.executable, "-c", code, *map(str, args)]
    return subprocess.Popen(
        command, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


CLI = "import runpy, sys; sys.argv[0] = 'babysit'; runpy.run_module('babysit', run_name='__main__')"
NO_RAY = "import sys; sys.modules['ray'] = None; " + CLI  # as if ray were not installed
SEARCH = """
import sys, babysit
stages = [{"epochs": 3, "trials": int(n)} for n in sys.argv[4].split(",")]
config = {"search": {"seed": 7, "space": {"optim.lr": "loguniform(1e-6, 1e1)"}, "stage": stages}}
babysit.search(config, objective=sys.argv[1], out=sys.argv[2], workers=2, backend="ray",
               address=sys.argv[3], resume=len(sys.argv) > 5)
"""


# --- without a cluster ---------------------------------------------------------------------
def test_backend_ray_without_ray_is_one_line_and_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "search.toml"
    config.write_text('[search.space]\n"optim.lr" = "loguniform(1e-4, 1e-1)"\n')
    out = tmp_path / "study"
    proc = _run(NO_RAY, "search", config, "--backend", "ray", "--workers", "2", "--out", out)
    _, stderr = proc.communicate()
    assert proc.returncode == 2, stderr
    assert stderr.strip().splitlines() == [
        "babysit: error: --backend ray: install the ray extra: pip install 'babysit[ray]'"
    ]
    assert not out.exists()


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ("cpus = 0", "search.resources.cpus = 0"),
        ("gpus = -1", "search.resources.gpus = -1"),
        ("gpus = 1.5", "search.resources.gpus = 1.5"),  # Ray: whole numbers above 1
        ("cpus = true", "search.resources.cpus = True"),
        ("cpu = 1", "search.resources.cpu"),
    ],
)
def test_bad_search_resources_are_one_line_and_exit_2(tmp_path: Path, table: str, key: str) -> None:
    config = tmp_path / "search.toml"
    config.write_text(f"[search.resources]\n{table}\n")
    out = tmp_path / "study"
    proc = _run(CLI, "search", config, "--backend", "ray", "--workers", "2", "--out", out)
    _, stderr = proc.communicate()
    assert proc.returncode == 2, stderr
    assert len(stderr.strip().splitlines()) == 1 and key in stderr
    assert not out.exists()


def test_search_resources_take_fractions_and_whole_numbers() -> None:
    config = babysit.Config.from_dict({"search": {"resources": {"cpus": 0.5, "gpus": 2}}})
    assert (config.search.resources.cpus, config.search.resources.gpus) == (0.5, 2)
    default = babysit.Config().search.resources
    assert (default.cpus, default.gpus) == (1, 0)


def test_address_with_the_local_backend_is_one_line_and_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "search.toml"
    config.write_text('[search.space]\n"optim.lr" = "loguniform(1e-4, 1e-1)"\n')
    proc = _run(CLI, "search", config, "--address", "auto", "--out", tmp_path / "study")
    _, stderr = proc.communicate()
    assert proc.returncode == 2
    assert stderr.strip().splitlines() == [
        "babysit: error: --address auto: only --backend ray takes an address "
        "(--backend local starts its workers on this machine)"
    ]


@pytest.mark.parametrize("address", ["127.0.0.1:1", "head-without-port", ""])
def test_an_address_where_no_ray_head_answers_is_one_line_and_exit_2(
    tmp_path: Path, address: str
) -> None:
    pytest.importorskip("ray", reason="ray is not installed")
    config = tmp_path / "search.toml"
    config.write_text('[search.space]\n"optim.lr" = "loguniform(1e-4, 1e-1)"\n')
    out = tmp_path / "study"
    proc = _run(CLI, "search", config, "--backend", "ray", "--address", address,
                "--workers", "2", "--out", out)  # fmt: skip
    _, stderr = proc.communicate()
    assert proc.returncode == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"babysit: error: --address {address}: ")
    assert not out.exists()


# --- on a local Ray cluster: a head (no CPUs: the drivers only) and worker nodes ------------
@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    cluster_utils = pytest.importorskip("ray.cluster_utils", reason="ray is not installed")
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = _env()["PYTHONPATH"]  # what the nodes' workers import
    head = {"num_cpus": 0, "object_store_memory": STORE, "include_dashboard": False}
    made = cluster_utils.Cluster(
        initialize_head=True, head_node_args={**head, "_system_config": FAST_FAILURE}
    )
    try:
        yield made
    finally:
        made.shutdown()  # this cluster's processes only
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved


def _nodes(cluster: Any, count: int) -> list[Any]:
    """The cluster's worker nodes, ``count`` at least (nodes added as needed: 2 CPUs each)."""
    while len(cluster.worker_nodes) < count:
        cluster.add_node(num_cpus=2, object_store_memory=STORE)
    cluster.wait_for_nodes()
    return list(cluster.worker_nodes)


def _wait_for(
    proc: subprocess.Popen[str], out: Path, pick: Callable[[FrozenTrial], bool]
) -> FrozenTrial:
    """The first trial ``pick`` takes, polling the study; fails if the search ends first."""
    while True:
        assert proc.poll() is None, proc.communicate()
        chosen = [t for t in journal_trials(out) if pick(t)]
        if chosen:
            return chosen[0]
        time.sleep(0.2)


def _running_on(nodes: list[Any]) -> Callable[[FrozenTrial], bool]:
    """A trial running for 0.3 s on one of ``nodes`` (a trial runs 2.4 s)."""
    ids = {node.node_id for node in nodes}

    def pick(trial: FrozenTrial) -> bool:
        owner = owner_of(trial)
        started = trial.datetime_start
        return (
            trial.state == TrialState.RUNNING
            and owner is not None
            and owner.get("node") in ids
            and started is not None
            and time.time() - started.timestamp() > 0.3
        )

    return pick


def _just_started(trial: FrozenTrial) -> bool:
    """Running, claimed, for less than half of its 2.4 s."""
    started = trial.datetime_start
    return (
        trial.state == TrialState.RUNNING
        and owner_of(trial) is not None
        and started is not None
        and time.time() - started.timestamp() < 1.2
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _check_counts(out: Path, stages: list[int]) -> list[FrozenTrial]:
    """Each stage's slots complete once each, every lost trial re-queued once; the lost."""
    trials = journal_trials(out)
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    for s, n in enumerate(stages):
        complete = [t for t in trials if t.user_attrs["stage"] == s and t.state.is_finished()]
        complete = [t for t in complete if t.state == TrialState.COMPLETE]
        assert sorted(t.user_attrs["slot"] for t in complete) == list(range(n))  # none twice
    lost = [t for t in trials if t.state != TrialState.COMPLETE]
    for trial in lost:
        assert trial.state == TrialState.FAIL and "error" not in trial.user_attrs
        retries = [t for t in trials if t.system_attrs.get("failed_trial") == trial.number]
        assert len(retries) == 1 and retries[0].params == trial.params
        assert retries[0].state == TrialState.COMPLETE
    summary = babysit.Study.from_dir(out)
    assert Counter(t["state"] for t in summary.trials) == {
        "complete": sum(stages),
        **({"lost": len(lost)} if lost else {}),
    }
    return lost


@pytest.mark.slow
def test_nodes_killed_mid_search_lose_no_trial_and_run_none_twice(
    cluster: Any, tmp_path: Path
) -> None:
    nodes = _nodes(cluster, 2)
    out, stages = tmp_path / "study", [max(12, 6 * KILLS), 4]
    proc = _run(SEARCH, OBJECTIVE, out, cluster.address, ",".join(map(str, stages)))
    victims = []
    try:
        for i in range(KILLS):  # alternately a raylet SIGKILLed, a node removed
            victim = _wait_for(proc, out, _running_on(nodes))
            node = next(n for n in nodes if n.node_id == owner_of(victim)["node"])  # type: ignore[index]
            if i % 2 == 0:
                os.kill(node.all_processes["raylet"][0].process.pid, signal.SIGKILL)
                cluster.remove_node(node, allow_graceful=False)  # the books: nothing left
            else:
                cluster.remove_node(node, allow_graceful=False)
            victims.append(victim.number)
            nodes = _nodes(cluster, 2)  # a fresh node for the next kill
        _, stderr = proc.communicate()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr
    lost = {t.number for t in _check_counts(out, stages)}
    ended = {t.number: t.state for t in journal_trials(out)}
    for number in victims:  # lost and re-queued, or finished by its worker before it died
        assert number in lost or ended[number] == TrialState.COMPLETE
    assert lost & set(victims)  # a kill caught its trial mid-run
    assert " lost: " in (out / "workers" / "ray.log").read_text()


@pytest.mark.slow
def test_a_killed_master_resumes_and_requeues_trials_of_other_machines_once(
    cluster: Any, tmp_path: Path
) -> None:
    """The master SIGKILLed mid-trial takes its actors with it; their trials, stamped as
    if on another machine (no pid to check there, no heartbeat in a journal), are re-queued
    once by the resumed master's Ray pool."""
    _nodes(cluster, 1)
    out, stages = tmp_path / "study", [6]
    args = (OBJECTIVE, out, cluster.address, "6")
    proc = _run(SEARCH, *args)
    _wait_for(proc, out, lambda t: t.state == TrialState.COMPLETE)
    _wait_for(proc, out, _just_started)
    proc.kill()
    proc.communicate()
    for trial in journal_trials(out):  # Ray ends a dead driver's actors: wait until it has
        owner = owner_of(trial)
        while trial.state == TrialState.RUNNING and owner is not None and _alive(owner["pid"]):
            time.sleep(0.2)
    storage = JournalStorage(JournalFileBackend(str(out / "journal.log")))
    study = optuna.load_study(study_name=out.name, storage=storage)
    moved = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = owner_of(trial)
        if owner is None:
            continue
        storage.set_trial_user_attr(trial._trial_id, OWNER, {**owner, "host": "elsewhere"})
        moved.append(trial.number)
    resumed = _run(SEARCH, *args, "resume")
    _, stderr = resumed.communicate()
    assert resumed.returncode == 0, stderr
    lost = _check_counts(out, stages)
    assert moved and set(moved) <= {t.number for t in lost}
    log = (out / "workers" / "ray.log").read_text()
    for number in moved:
        assert f"trial {number} lost with its worker" in log


@pytest.mark.slow
def test_a_worker_whose_trial_was_taken_for_lost_goes_on(cluster: Any, tmp_path: Path) -> None:
    """A worker cut off from its node runs on while the master fails and re-queues its
    trial: the storage refuses the old try's report, the worker takes the next trial,
    and the retry is the one that counts."""
    _nodes(cluster, 1)
    out = tmp_path / "study"
    proc = _run(SEARCH, f"{HERE / 'objectives.py'}:cut_off_once", out, cluster.address, "4")
    _, stderr = proc.communicate()
    assert proc.returncode == 0, stderr
    lost = _check_counts(out, [4])
    assert [t.user_attrs["slot"] for t in lost] == [0]


@pytest.mark.slow
def test_an_objective_that_raises_on_a_ray_worker_stops_the_search(
    cluster: Any, tmp_path: Path
) -> None:
    _nodes(cluster, 1)
    proc = _run(SEARCH, f"{HERE / 'objectives.py'}:broken", tmp_path / "s", cluster.address, "4")
    _, stderr = proc.communicate()
    assert proc.returncode == 1
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("babysit.tuning.launch.WorkerError: ray worker ")
    assert last.endswith("failed: RuntimeError: the objective has a bug")


@pytest.mark.slow
def test_without_an_address_the_search_runs_on_a_ray_of_its_own(tmp_path: Path) -> None:
    pytest.importorskip("ray", reason="ray is not installed")
    out = tmp_path / "study"
    code = SEARCH.replace("address=sys.argv[3]", "address=None")
    env = {k: v for k, v in _env().items() if k != "RAY_ADDRESS"}
    proc = subprocess.run(
        [sys.executable, "-c", code, OBJECTIVE, str(out), "-", "4"],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert not _check_counts(out, [4])
    assert (out / "workers" / "ray.log").read_text().count(" started") == 2


@pytest.mark.slow
def test_resources_no_node_has_are_one_line_and_exit_2(cluster: Any, tmp_path: Path) -> None:
    config = tmp_path / "search.toml"
    config.write_text("[search.resources]\ngpus = 1\n")
    proc = _run(CLI, "search", config, "--backend", "ray", "--address", cluster.address,
                "--workers", "2", "--out", tmp_path / "study")  # fmt: skip
    _, stderr = proc.communicate()
    assert proc.returncode == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "cpus = 1, gpus = 1: no node of the Ray cluster" in lines[0]
