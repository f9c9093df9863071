"""What babysit.search() costs a trial: N trivial trials, babysit beside Optuna's own loop.

    .venv/bin/python benchmarks/search_overhead.py               # N=200, 5 rounds
    .venv/bin/python benchmarks/search_overhead.py --quick       # N=50, 1 round
    .venv/bin/python benchmarks/search_overhead.py --profile     # + cProfile of babysit's run
    .venv/bin/python benchmarks/search_overhead.py --dir runs    # on the disk of your runs

The objective does nothing: it reports one score for epoch 1 (the stage's 1 epoch: the
trial is complete) and returns, so a search's wall time is all bookkeeping. The figure is
wall time / N in ms per trial, the median over rounds, for:

- babysit.search with its default storage (Optuna's journal file in the study dir), with
  K = 1 and 2 workers when this build's ``babysit.search`` takes ``workers=`` (K = 1 runs
  the trials in the master's process), else in this process (it says which);
- Optuna's own ``study.optimize`` of the same objective (one log-uniform parameter, the
  random sampler, one ``trial.report``) on a journal file, on SQLite, and in memory (the
  floor: no storage cost at all).

Goal: babysit <= 5 ms/trial. Each round runs every mode back to back, in a fresh
temporary directory on the same disk; the ratio to Optuna's journal is the median over
rounds of the ratio within a round (the drift of a shared disk and machine cancels).
Every journal write is an fsync (Optuna's ``JournalFileBackend``), so the figures depend
on the disk: the script prints this disk's fsync time and each journal mode's writes per
trial (lines of its journal / N), from which the cost on another disk follows (writes x
fsync + the rest).
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import inspect
import io
import logging
import os
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.storages.journal import JournalFileBackend, JournalStorage

import babysit

GOAL_MS = 5.0
SPACE = {"optim.lr": "loguniform(1e-6, 1e1)"}


def trivial(params: dict[str, Any], report: Callable[[int, float], None]) -> float:
    """The babysit objective: one report for epoch 1 (which completes the 1-epoch stage)."""
    report(1, 0.5)
    return 0.5


def trivial_optuna(trial: optuna.Trial) -> float:
    """The same for Optuna: sample the parameter, report once, return."""
    trial.suggest_float("optim.lr", 1e-6, 1e1, log=True)
    trial.report(0.5, step=1)
    return 0.5


def config(trials: int) -> dict[str, Any]:
    # no study page at the end: a fixed cost of the search, not bookkeeping per trial
    return {
        "train": {"report": False},
        "search": {"space": SPACE, "stage": [{"epochs": 1, "trials": trials}]},
    }


def takes_workers() -> bool:
    """Whether this build's ``babysit.search`` has a ``workers=`` parameter."""
    return "workers" in inspect.signature(babysit.search).parameters


def run_babysit(trials: int, root: Path, workers: int | None = None) -> float:
    """Seconds for ``babysit.search`` of ``trials`` trivial trials (study dir under root).

    With ``workers`` the objective goes as ``"this/file.py:trivial"``: worker processes
    import it (a script's functions live in ``__main__``, which they cannot import).
    """
    objective: Any = trivial
    kwargs: dict[str, Any] = {}
    if workers is not None:
        objective, kwargs = f"{Path(__file__).resolve()}:trivial", {"workers": workers}
    start = time.perf_counter()
    study = babysit.search(config(trials), objective=objective, out=root / "study", **kwargs)
    seconds = time.perf_counter() - start
    assert len(study.trials) == trials, f"{len(study.trials)} trials, not {trials}"
    return seconds


def run_optuna(trials: int, storage: Any) -> float:
    """Seconds for Optuna's ``study.optimize`` of ``trials`` trivial trials on ``storage``."""
    start = time.perf_counter()
    study = optuna.create_study(
        storage=storage, sampler=optuna.samplers.RandomSampler(seed=0), direction="maximize"
    )
    study.optimize(trivial_optuna, n_trials=trials)
    seconds = time.perf_counter() - start
    assert len(study.trials) == trials
    return seconds


def modes(workers: bool) -> dict[str, Callable[[int, Path], float]]:
    """Mode name -> (trials, a fresh directory) -> seconds."""
    table: dict[str, Callable[[int, Path], float]] = {}
    if workers:  # workers=1: the trials run in the master's process
        for k in (1, 2):
            table[f"babysit journal, workers={k}"] = functools.partial(run_babysit, workers=k)
    else:
        table["babysit journal, in-process"] = lambda n, d: run_babysit(n, d)
    table |= {
        "optuna journal": lambda n, d: run_optuna(
            n, JournalStorage(JournalFileBackend(str(d / "journal.log")))
        ),
        "optuna sqlite": lambda n, d: run_optuna(n, f"sqlite:///{d / 'study.db'}"),
        "optuna in-memory": lambda n, d: run_optuna(n, None),
    }
    return table


def journal_writes(root: Path) -> int | None:
    """Lines (one per write) of the journal file under ``root``; None without one."""
    found = sorted(root.rglob("journal.log"))
    return sum(1 for _ in found[0].open("rb")) if found else None


def fsync_ms(root: Path, repeats: int = 50) -> float:
    """Median ms of appending one line to a file and fsyncing it, on ``root``'s disk."""
    times = []
    with (root / "fsync.probe").open("ab") as f:
        for _ in range(repeats):
            start = time.perf_counter()
            f.write(b"x\n")
            f.flush()
            os.fsync(f.fileno())
            times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def profile(trials: int, top: int, where: str | None) -> str:
    """cProfile of one in-process babysit search: the top functions by own time."""
    with tempfile.TemporaryDirectory(dir=where) as tmp:
        profiler = cProfile.Profile()
        profiler.enable()
        run_babysit(trials, Path(tmp))
        profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="50 trials, 1 round")
    parser.add_argument("--profile", action="store_true", help="cProfile babysit's run too")
    parser.add_argument("--top", type=int, default=30, help="functions shown by --profile")
    parser.add_argument("--dir", help="where the studies go (default: the system's temp dir)")
    args = parser.parse_args(argv)
    trials, rounds = (50, 1) if args.quick else (args.trials, args.rounds)
    logging.getLogger("optuna").setLevel(logging.WARNING)
    workers = takes_workers()
    table = modes(workers)
    seconds: dict[str, list[float]] = {name: [] for name in table}
    marginal: dict[str, list[float]] = {name: [] for name in table}
    writes: dict[str, int | None] = {}
    fsyncs: list[float] = []
    for _ in range(rounds):
        for name, run in table.items():
            with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
                seconds[name].append(run(trials, Path(tmp)))
                writes[name] = journal_writes(Path(tmp))
            with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
                # N more trials in a search of 2N: the fixed costs (worker start-up, study
                # creation, summary.json) cancel, what is left is the cost of a trial
                marginal[name].append(run(2 * trials, Path(tmp)) - seconds[name][-1])
        with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
            fsyncs.append(fsync_ms(Path(tmp)))
    ms = {name: 1e3 * statistics.median(s) / trials for name, s in seconds.items()}
    per_trial = {name: 1e3 * statistics.median(s) / trials for name, s in marginal.items()}
    disk = statistics.median(fsyncs)
    print(f"{trials} trivial trials, median of {rounds} round(s); ms per trial = wall / trials")
    print(
        f"this disk: {disk:.2f} ms per fsync of a one-line append (median of rounds; "
        f"{min(fsyncs):.2f} - {max(fsyncs):.2f})"
    )
    if not workers:
        print("workers: not available in this build (babysit.search takes no workers=)")
    base = seconds["optuna journal"]
    print(
        f"    {'mode':32s} {'ms/trial':>9s} {'/ optuna journal':>17s} {'writes/trial':>13s}"
        f" {'marginal ms/trial':>18s}"
    )
    for name, value in ms.items():
        # the ratio of each round's pair, median over rounds: a shared disk's drift cancels
        ratio = statistics.median(a / b for a, b in zip(seconds[name], base, strict=True))
        w = writes[name]
        shown = "-" if w is None else f"{w / trials:.2f}"
        print(f"    {name:32s} {value:9.2f} {ratio:16.2f}x {shown:>13s} {per_trial[name]:18.2f}")
    print("    marginal: (wall of 2N trials - wall of N) / N, fixed costs excluded")
    ok = all(v <= GOAL_MS for name, v in per_trial.items() if name.startswith("babysit"))
    print(f"    goal babysit <= {GOAL_MS:g} ms/trial (marginal): {'met' if ok else 'MISSED'}")
    if args.profile:
        print(profile(trials, args.top, args.dir))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
