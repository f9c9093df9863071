"""How the search scales with workers: trials/s for 1, 2 and 4 local workers and on a
two-node Ray cluster, side by side in one run.

    .venv/bin/python benchmarks/scaling.py              # 48 trials per setup
    .venv/bin/python benchmarks/scaling.py --quick      # 16 trials per setup
    .venv/bin/python benchmarks/scaling.py --no-ray     # the local workers only
    .venv/bin/python benchmarks/scaling.py --rounds 3   # medians over 3 rounds

The objective is short and real: a softmax regression on a fixed synthetic problem
(5000 x 40, 4 classes) trained by full-batch gradient descent with the trial's
``optim.lr`` for 3 epochs of 100 steps, each epoch's validation accuracy reported: about
0.2 s of one core per trial, in numpy held to one thread (so a worker is one core).

Each setup runs one fresh 1-stage study of N trials with ``babysit.search``: ``local``
with K = 1 (the trials run in the master's process), 2 and 4 worker processes, and
``ray`` with K = 2 and 4 actors (``cpus = 1`` each, spread) on a local
``ray.cluster_utils.Cluster``: a head with no CPUs and two worker nodes of 2 CPUs, all on
this machine. Two figures per setup:

- trials/s = N / (the last trial's end - the first trial's start), read from the study:
  the throughput once the workers run, and the ratio to K = 1's within the same round
  (medians over ``--rounds``: the drift of a shared machine cancels);
- wall = the whole ``babysit.search`` call, starting the workers included (a Ray actor
  imports babysit and optuna afresh; the cluster's own start is not counted).

A machine with C free cores gives at most min(K, C) x; the rest is what a trial costs the
master, the storage (each journal write is an fsync) and the workers' polling. The script
prints the objective's own time per trial in this process, and the load average before
and after (the figures mean little on a machine that other work keeps busy).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # before numpy loads (below, lazily): one core a worker

if TYPE_CHECKING:
    import numpy as np

EPOCHS, STEPS = 3, 100
NODES, NODE_CPUS = 2, 2
STORE = 80 * 2**20  # each Ray node's object store (the workers pass no objects)


def _problem() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    import numpy as np

    rng = np.random.default_rng(0)
    w = rng.normal(size=(40, 4))
    x = rng.normal(size=(6000, 40))
    y = np.argmax(x @ w + rng.normal(scale=2.0, size=(6000, 4)), axis=1)
    return x[:5000], y[:5000], x[5000:], y[5000:]


def softmax_regression(params: dict[str, Any], report: Callable[[int, float], None]) -> float:
    """Validation accuracy of softmax regression trained with ``params["optim.lr"]``."""
    import numpy as np

    x, y, xv, yv = _problem()
    w = np.zeros((x.shape[1], 4))
    onehot = np.eye(4)[y]
    accuracy = 0.0
    for epoch in range(1, EPOCHS + 1):
        for _ in range(STEPS):
            logits = x @ w
            p = np.exp(logits - logits.max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
            w -= params["optim.lr"] * x.T @ (p - onehot) / len(x)
        accuracy = float(np.mean(np.argmax(xv @ w, axis=1) == yv))
        report(epoch, accuracy)
    return accuracy


def _config(trials: int) -> dict[str, Any]:
    return {
        "search": {
            "seed": 1,
            "space": {"optim.lr": "loguniform(1e-3, 1e1)"},
            "stage": [{"epochs": EPOCHS, "trials": trials}],
        }
    }


def _measure(
    trials: int, root: Path, label: str, workers: int, **how: Any
) -> dict[str, float | str]:
    import babysit

    objective = f"{Path(__file__).resolve()}:softmax_regression"
    start = time.perf_counter()
    study = babysit.search(
        _config(trials), objective=objective, out=root / label, workers=workers,
        progress=None, **how,
    )  # fmt: skip
    wall = time.perf_counter() - start
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    storage = JournalStorage(JournalFileBackend(str(study.dir / "journal.log")))
    done = optuna.load_study(study_name=study.dir.name, storage=storage).trials
    assert sum(t.state.name == "COMPLETE" for t in done) == trials
    first = min(t.datetime_start for t in done if t.datetime_start is not None)
    last = max(t.datetime_complete for t in done if t.datetime_complete is not None)
    return {"setup": label, "rate": trials / (last - first).total_seconds(), "wall": wall}


def _ray_cluster() -> Any:
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 0, "object_store_memory": STORE, "include_dashboard": False},
    )
    for _ in range(NODES):
        cluster.add_node(num_cpus=NODE_CPUS, object_store_memory=STORE)
    cluster.wait_for_nodes()
    return cluster


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())  # other processes share the cores


def _round(trials: int, root: Path, ray: bool, cluster: Any) -> list[dict[str, float | str]]:
    """Every setup once, back to back (one round)."""
    rows = [_measure(trials, root, f"local K={k}", k) for k in (1, 2, 4)]
    if ray:
        for k in (2, 4):
            label = f"ray K={k} ({NODES} nodes)"
            rows.append(_measure(trials, root, label, k, backend="ray", address=cluster.address))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="16 trials per setup")
    parser.add_argument("--trials", type=int, default=None, help="trials per setup (48)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of every setup (1)")
    parser.add_argument("--no-ray", action="store_true", help="local workers only")
    args = parser.parse_args(argv)
    trials = args.trials or (16 if args.quick else 48)
    import babysit

    src = Path(babysit.__file__).resolve().parents[1]  # what workers and Ray nodes import
    os.environ["PYTHONPATH"] = os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")])
    start = time.perf_counter()
    for lr in (0.01, 0.1, 1.0):
        softmax_regression({"optim.lr": lr}, lambda epoch, value: None)
    alone = (time.perf_counter() - start) / 3
    print(f"{trials} trials per setup, {args.rounds} round(s), {os.cpu_count()} cores, "
          f"load average {_load()}")  # fmt: skip
    print(f"the objective alone: {alone:.3f} s a trial in this process ({1 / alone:.2f}/s)")
    rounds = []
    with tempfile.TemporaryDirectory(prefix="babysit-scaling-") as tmp:
        cluster = None if args.no_ray else _ray_cluster()
        try:
            for r in range(args.rounds):
                rounds.append(_round(trials, Path(tmp) / str(r), cluster is not None, cluster))
        finally:
            if cluster is not None:
                cluster.shutdown()
    print(f"load average after: {_load()}")
    print(f"\n{'setup':<22} {'trials/s':>9} {'x K=1':>6} {'wall s':>7}   (medians over rounds)")
    for i, row in enumerate(rounds[0]):
        rate = statistics.median(float(r[i]["rate"]) for r in rounds)
        ratio = statistics.median(float(r[i]["rate"]) / float(r[0]["rate"]) for r in rounds)
        wall = statistics.median(float(r[i]["wall"]) for r in rounds)
        print(f"{row['setup']:<22} {rate:9.2f} {ratio:6.2f} {wall:7.1f}")


if __name__ == "__main__":
    sys.exit(main())
