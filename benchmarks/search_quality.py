"""The notes' coarse -> fine claim, measured: four searches at an equal budget of epochs.

    .venv/bin/python benchmarks/search_quality.py            # digits + spiral, seeds 0-4
    .venv/bin/python benchmarks/search_quality.py --quick    # smaller budget, 2 seeds
    .venv/bin/python benchmarks/search_quality.py --tune     # the layout choice (seeds 100-104)

On each task, for each seed, four searches of the notes' default space (``optim.lr`` and
``train.reg`` log-uniform on [1e-6, 1e1], Adam) with ``babysit.search`` and its built-in
objective (each trial a ``babysit.train`` run), at one budget B of training epochs summed
over trials (default 200; full length E = 10 epochs):

(a) **flat**: random search, B / E trials at full length;
(b) **coarse -> fine**: random search in stages with zoom; the last stage at full length
    (the layout: ``COARSE_TO_FINE``, as fractions of E and of B);
(c) **tpe**: Optuna's TPE sampler, B / E trials at full length (its first 10 are random);
(d) **hyperband**: random search at full length with Optuna's Hyperband pruner, trials
    until the epochs spent reach B (the last trial may overshoot by less than E).

For each: the best validation score it reports (``Study.best``: the best complete trial of
its last stage), the test score of that trial's best checkpoint (the test split is read
once, after the search), the epochs it spent, and the budget it needed to reach the flat
search's final validation score: the epochs of the trials before, in order of completion,
plus the epochs of the trial that reached it up to the epoch it did (a diverged trial
counts up to where it diverged). Medians over the seeds; "never" where the median seed did
not reach it. Goal: coarse -> fine reaches flat's score with <= B / 3.

Seeds: seed s sets the search's sampler seed, the training seed and the task's data split
(``split_seed``), so seeds 100-104 (``--tune``) use other splits of the data than the
reported seeds 0-4. The random searches of one seed draw from the same stream, so flat,
hyperband and coarse -> fine's first stage try the same first configurations (paired).

Held out: the coarse -> fine layout is the only choice made for this benchmark, and it was
made with ``--tune`` on seeds 100-104 of both tasks (the candidates in ``LAYOUTS``; the one
with the smallest median budget to reach flat's score, averaged over the two tasks, ties by
best validation score), never on the reported seeds 0-4. That run (B = 200, E = 10) gave,
as fractions of B on digits / spiral: 1x15% 3x15% 10x70% 0.33 / 0.39 (chosen),
1x25% 10x75% 0.29 / 0.52, 2x30% 10x70% 0.47 / 0.45, 1x20% 3x30% 10x50% 0.59 / 0.54,
1x50% 10x50% 0.57 / 0.62; flat itself reached its own final score at 0.59 / 0.89.
E, B, the models and the tasks' options were set before any search ran, from three single
training runs per task (lr 1e-3, 1e-2, 1e-1 for 20 epochs on the data split of seed 0:
how long a good run takes to level off, and a spiral validation split big enough to rank
runs); TPE and Hyperband run with Optuna's defaults (babysit's registries).
Tasks: ``digits-mlp`` (hidden [64], batch 64) and ``spiral-mlp`` with 300 points per class
(hidden [64], batch 32; 100 per class leaves a 60-example validation split).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import statistics
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.storages.journal import JournalFileBackend, JournalStorage

import babysit
from babysit.config import Config
from babysit.monitor.log import read_metrics
from babysit.splits import Batches
from babysit.tasks import task_for
from babysit.training.checkpoint import list_checkpoints, load_checkpoint
from babysit.training.evaluate import evaluate
from babysit.tuning.space import parse_space
from babysit.tuning.summary import best_of, trial_record

# a layout: stages as (epochs as a fraction of E, share of the budget B); the last at E
Layout = tuple[tuple[float, float], ...]
LAYOUTS: dict[str, Layout] = {
    "1x25% 10x75%": ((0.1, 0.25), (1.0, 0.75)),
    "1x50% 10x50%": ((0.1, 0.5), (1.0, 0.5)),
    "1x20% 3x30% 10x50%": ((0.1, 0.2), (0.3, 0.3), (1.0, 0.5)),
    "1x15% 3x15% 10x70%": ((0.1, 0.15), (0.3, 0.15), (1.0, 0.7)),
    "2x30% 10x70%": ((0.2, 0.3), (1.0, 0.7)),
}
COARSE_TO_FINE = "1x15% 3x15% 10x70%"  # chosen by --tune on seeds 100-104 (the docstring)
TASKS: dict[str, dict[str, Any]] = {
    "digits": {"task": {"name": "digits-mlp"}, "model": {"hidden": [64]}, "batch_size": 64},
    "spiral": {
        "task": {"name": "spiral-mlp", "options": {"n_per_class": 300}},
        "model": {"hidden": [64]},
        "batch_size": 32,
    },
}


@dataclass(frozen=True)
class Method:
    name: str
    stages: list[dict[str, Any]]  # [[search.stage]]: {epochs, trials}
    sampler: str = "random"
    pruner: str = "none"
    open_ended: bool = False  # trials until the budget is spent (hyperband)


@dataclass
class TrialLog:
    """One trial as the budget sees it: its epoch scores and the epochs it spent."""

    number: int
    stage: int
    state: str
    scores: list[float]  # validation score after epoch 1, 2, ...
    spent: float  # epochs trained (a diverged trial: up to where it diverged)


@dataclass
class Outcome:
    """One search: what it reports, what it spent, and its trials in order of completion."""

    best_val: float
    test: float
    spent: float
    trials: list[TrialLog] = field(default_factory=list)


# --- pure helpers (tests/tuning/test_search_benchmarks.py) ----------------------------------
def layout_stages(layout: Layout, *, budget: int, epochs: int) -> list[dict[str, Any]]:
    """``[[search.stage]]`` of a layout: whole epochs (at least 1), trials to fill each share."""
    stages = []
    for frac_epochs, share in layout:
        e = max(1, round(frac_epochs * epochs))
        stages.append({"epochs": e, "trials": max(1, round(share * budget / e))})
    return stages


def planned(stages: Iterable[Mapping[str, Any]]) -> int:
    """Epochs the stages plan: sum of epochs x trials."""
    return sum(int(s["epochs"]) * int(s["trials"]) for s in stages)


def methods(*, budget: int, epochs: int, layout: Layout) -> list[Method]:
    flat = [{"epochs": epochs, "trials": max(1, budget // epochs)}]
    return [
        Method("flat random", flat),
        Method("coarse -> fine", layout_stages(layout, budget=budget, epochs=epochs)),
        Method("tpe", flat, sampler="tpe"),
        # presampled random: at most one trial per epoch of budget is ever needed
        Method(
            "hyperband", [{"epochs": epochs, "trials": budget}], pruner="hyperband", open_ended=True
        ),
    ]


def budget_to_reach(trials: Sequence[TrialLog], threshold: float) -> float:
    """Epochs spent, in order of completion, until a validation score >= ``threshold``.

    The epochs of the trials before plus this trial's epochs up to the one that reached
    it; ``inf`` when none did.
    """
    before = 0.0
    for t in trials:
        for epoch, score in enumerate(t.scores, start=1):
            if score >= threshold:
                return before + epoch
        before += t.spent
    return math.inf


def trial_log(
    number: int, stage: int, state: str, records: Iterable[Mapping[str, Any]]
) -> TrialLog:
    """A trial's epoch scores and epochs spent from its metrics.jsonl records."""
    scores: list[float] = []
    spent = 0.0
    for r in records:
        if r.get("kind") == "epoch":
            scores.append(float(r["val_acc"]))
            spent = max(spent, float(r["epoch"]))
        elif r.get("kind") == "event" and r.get("what") == "diverged":
            spent = max(spent, float(r["epoch"]))
    return TrialLog(number, stage, state, scores, spent)


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


# --- one search ------------------------------------------------------------------------------
class BudgetSpent(Exception):
    """Raised by the progress callback of an open-ended search once B epochs are spent."""


class OnTrialEnd:
    """``progress=`` for either build: ``fn(record)`` after each finished trial.

    A plain callable (this build) or a ``SearchCallback`` (builds with worker processes
    call its ``on_trial_end`` and its other ``on_*`` hooks, no-ops here).
    """

    def __init__(self, fn: Callable[[dict[str, Any]], None]) -> None:
        self.fn = fn

    def __call__(self, record: dict[str, Any]) -> None:
        self.fn(record)

    def on_trial_end(self, record: dict[str, Any]) -> None:
        self.fn(record)

    def __getattr__(self, name: str) -> Callable[..., None]:
        if name.startswith("on_"):
            return lambda *args, **kwargs: None
        raise AttributeError(name)


def config(task: str, seed: int, method: Method) -> dict[str, Any]:
    spec = TASKS[task]
    options = {**spec["task"].get("options", {}), "split_seed": seed}
    return {
        "task": {**spec["task"], "options": options},
        "model": dict(spec["model"]),
        "train": {"seed": seed, "batch_size": spec["batch_size"]},
        "search": {
            "seed": seed,
            "sampler": method.sampler,
            "pruner": method.pruner,
            "stage": method.stages,
        },
    }


def _log_of(study_dir: Path, record: Mapping[str, Any]) -> TrialLog:
    path = study_dir / record["dir"] / "metrics.jsonl"
    records = read_metrics(path) if path.is_file() else ()
    return trial_log(record["number"], record["stage"], record["state"], records)


def test_score(study_dir: Path, record: Mapping[str, Any]) -> float:
    """The test score of a trial's best checkpoint (the one read of the test split)."""
    run_dir = study_dir / record["dir"]
    cfg = Config.from_dict(tomllib.loads((run_dir / "config.toml").read_text()))
    task = task_for(cfg)
    best = max(list_checkpoints(run_dir / "checkpoints"), key=lambda c: (c.value, -c.epoch))
    model = task.model_factory(cfg.model_table())
    model.load_state_dict(load_checkpoint(best.path)["model"])
    return evaluate(model, Batches(task.test, 1024, shuffle=False), task.loss_fn, task.metric)[1]


def run_search(task: str, seed: int, method: Method, *, budget: int, root: Path) -> Outcome:
    """One search in ``root``; its trials read back from the journal and the trial dirs."""
    cfg = config(task, seed, method)
    study_dir = root / f"{task}-{seed}-{method.name.replace(' ', '').replace('>', '')}"
    spent = [0.0]

    def progress(record: dict[str, Any]) -> None:
        spent[0] += _log_of(study_dir, record).spent
        if method.open_ended and spent[0] >= budget:
            raise BudgetSpent

    with contextlib.suppress(BudgetSpent):  # the study's storage holds every trial that ran
        babysit.search(cfg, out=study_dir, progress=OnTrialEnd(progress))
    storage = JournalStorage(JournalFileBackend(str(study_dir / "journal.log")))
    frozen = optuna.load_study(study_name=study_dir.resolve().name, storage=storage).trials
    space = parse_space(Config.from_dict(cfg))
    records = [trial_record(t, space) for t in frozen if t.state.is_finished()]
    records = [r for r in records if "dir" in r]
    logs = [_log_of(study_dir, r) for r in records]
    best = best_of(records, direction="max")
    chosen = next(r for r in records if r["number"] == best["trial"])
    return Outcome(
        best_val=float(best["value"]),
        test=test_score(study_dir, chosen),
        spent=sum(t.spent for t in logs),
        trials=logs,
    )


# --- the benchmark ---------------------------------------------------------------------------
@dataclass
class Row:
    method: Method
    outcomes: list[Outcome]
    reach: list[float]  # budget to reach flat's score, per seed


def run_task(
    task: str,
    seeds: Sequence[int],
    ms: Sequence[Method],
    *,
    budget: int,
    root: Path,
    say: Callable[[str], None],
) -> list[Row]:
    """Every method on every seed; the first method (flat) sets each seed's threshold."""
    rows = [Row(m, [], []) for m in ms]
    for seed in seeds:
        start = time.perf_counter()
        threshold = None
        for row in rows:
            out = run_search(task, seed, row.method, budget=budget, root=root)
            threshold = out.best_val if threshold is None else threshold
            row.outcomes.append(out)
            row.reach.append(budget_to_reach(out.trials, threshold))
        say(f"  {task} seed {seed}: {time.perf_counter() - start:.0f} s")
    return rows


def _reach(value: float, budget: int) -> str:
    return "never" if math.isinf(value) else f"{value:5.0f} ({value / budget:4.2f} B)"


def print_table(task: str, rows: Sequence[Row], budget: int, seeds: Sequence[int]) -> None:
    print(f"{task}: budget B = {budget} epochs; medians over seeds {list(seeds)}")
    w = max(len(row.method.name) for row in rows)
    print(
        f"    {'method':{w}s} {'stages (epochs x trials)':24s} {'best val':>9s} {'test':>7s} "
        f"{'spent':>6s} {'to reach flat':>17s} {'reached':>8s}"
    )
    for row in rows:
        stages = ", ".join(f"{s['epochs']}x{s['trials']}" for s in row.method.stages)
        if row.method.open_ended:
            stages = f"{row.method.stages[0]['epochs']}x(until B)"
        reached = sum(not math.isinf(r) for r in row.reach)
        print(
            f"    {row.method.name:{w}s} {stages:24s} "
            f"{median(o.best_val for o in row.outcomes):9.4f} "
            f"{median(o.test for o in row.outcomes):7.4f} "
            f"{median(o.spent for o in row.outcomes):6.0f} "
            f"{_reach(median(row.reach), budget):>17s} {reached:>5d}/{len(row.reach)}"
        )


def goal_met(rows: Sequence[Row], budget: int) -> bool:
    """Coarse -> fine's median budget to reach flat's score is at most B / 3."""
    row = next(r for r in rows if r.method.name == "coarse -> fine")
    return median(row.reach) <= budget / 3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(TASKS))
    parser.add_argument("--seeds", type=int, nargs="+", help="default 0-4 (--tune: 100-104)")
    parser.add_argument("--budget", type=int, default=200, help="B: epochs per search")
    parser.add_argument("--epochs", type=int, default=10, help="E: a full-length trial")
    parser.add_argument("--quick", action="store_true", help="B=60, E=5, seeds 0 1")
    parser.add_argument("--tune", action="store_true", help="flat and every layout in LAYOUTS")
    parser.add_argument("--out", help="keep the studies here (default: a temp dir)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    budget, epochs = (60, 5) if args.quick else (args.budget, args.epochs)
    default_seeds = [0, 1] if args.quick else list(range(100, 105) if args.tune else range(5))
    seeds = args.seeds or default_seeds
    if args.tune:
        flat = methods(budget=budget, epochs=epochs, layout=LAYOUTS[COARSE_TO_FINE])[0]
        ms = [flat] + [
            Method(f"c->f {name}", layout_stages(layout, budget=budget, epochs=epochs))
            for name, layout in LAYOUTS.items()
        ]
    else:
        ms = methods(budget=budget, epochs=epochs, layout=LAYOUTS[COARSE_TO_FINE])
    plans = [f"{m.name} {budget if m.open_ended else planned(m.stages)}" for m in ms]
    print(
        f"E = {epochs} epochs a full-length trial, B = {budget} epochs; planned: {', '.join(plans)}"
    )
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.out) if args.out else Path(tmp)
        for task in args.tasks:
            rows = run_task(task, seeds, ms, budget=budget, root=root, say=print)
            print_table(task, rows, budget, seeds)
            if not args.tune:
                met = goal_met(rows, budget)
                ok &= met
                print(
                    f"    goal: coarse -> fine reaches flat's score with <= B/3 = "
                    f"{budget / 3:.0f} epochs: {'met' if met else 'MISSED'}"
                )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
