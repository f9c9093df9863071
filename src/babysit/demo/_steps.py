"""The recipe's steps, in order: :data:`STEPS` (a Registry of :class:`Step`).

Each step reads what earlier steps left in :class:`DemoState`, writes its own files under
the demo dir and returns one line for the closing summary:

    gradcheck   gradcheck.json   the analytic gradient of every parameter vs finite differences
    sanity      sanity.json      chance loss, regularisation raises the loss, overfit 20 samples
    search      study/           coarse -> fine random search over lr and reg (population)
    train       final/           the best values trained with the monitor and an EMA of the weights
    ensemble    ensemble/        the top trials + the final run's best and EMA weights, averaged

A failed check stops the demo (:class:`CheckFailed`: the CLI's exit code 1) before any
training, as ``train.sanity`` / ``train.gradcheck`` stop a run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from babysit._io import write_json_atomic
from babysit._registry import Registry
from babysit._render import print_report
from babysit.config import Config
from babysit.errors import BabysitError
from babysit.tasks import Task

__all__ = ["STEPS", "CheckFailed", "DemoState", "Step"]

STUDY, FINAL, ENSEMBLE = "study", "final", "ensemble"  # sub dirs of the demo dir
TOP = 5  # the search's best trials that join the ensemble
EMA = 0.999  # the final run's weight average (train.ema)


class CheckFailed(BabysitError):
    """A check the demo ran failed, or its final run diverged: the recipe stops (exit 1)."""


@dataclass
class DemoState:
    """What the steps share: the demo dir, its config and task, and what each step found."""

    dir: Path
    config: Config
    task: Task
    console: Console | None  # None: quiet
    best: dict[str, Any] = field(default_factory=dict)  # the search's best params
    top: int = 0  # the search's best trials the ensemble takes (complete ones of the last stage)
    final_members: list[Path] = field(default_factory=list)  # the final run's checkpoints


@dataclass(frozen=True)
class Step:
    name: str
    title: str
    run: Callable[[DemoState], str]  # -> one line for the summary


STEPS: Registry[Step] = Registry("demo step")


StepFn = Callable[[DemoState], str]


def step(name: str, title: str) -> Callable[[StepFn], StepFn]:
    """Register ``fn(state) -> line`` as the next step of the recipe."""
    return STEPS.register(name, wrap=lambda fn: Step(name, title, fn))


def _check(state: DemoState, name: str) -> Any:
    """Run the pre-training check ``name`` (checks/gates.py), write ``<name>.json``."""
    from babysit.checks.gates import GATES

    gate = GATES[name]
    report = gate.run(state.task, state.config)
    write_json_atomic(state.dir / f"{name}.json", report.to_dict())
    if state.console is not None:
        print_report(report, title=gate.title, console=state.console)
    if not report.passed:
        raise CheckFailed(f"the {gate.title} failed: see {state.dir / f'{name}.json'}")
    return report


@step("gradcheck", "Gradient check")
def _gradcheck(state: DemoState) -> str:
    report = _check(state, "gradcheck")
    verdicts = [p.verdict for p in report.params]
    counts = ", ".join(f"{verdicts.count(v)} {v}" for v in dict.fromkeys(verdicts))
    return f"{len(verdicts)} parameter tensors checked: {counts}"


@step("sanity", "Sanity checks")
def _sanity(state: DemoState) -> str:
    report = _check(state, "sanity")
    return f"{sum(c.passed for c in report.checks)} of {len(report.checks)} checks passed"


@step("search", "Hyperparameter search")
def _search(state: DemoState) -> str:
    from babysit.demo._progress import StepSearchProgress
    from babysit.tuning.master import search

    progress = None if state.console is None else StepSearchProgress(state.console)
    study = search(state.config, out=state.dir / STUDY, progress=progress)
    state.best = dict(study.best["params"])
    last = len(study.stages) - 1
    complete = [t for t in study.trials if t["stage"] == last and t["state"] == "complete"]
    state.top = min(TOP, len(complete))
    values = ", ".join(f"{k} = {v:.3g}" for k, v in state.best.items())
    warned = f"; {len(study.border_warnings)} border warning(s)" if study.border_warnings else ""
    return f"best {values} (val {study.best['value']:.4f}, trial {study.best['trial']}){warned}"


def final_config(config: Config, best: dict[str, Any]) -> Config:
    """``config`` with the search's best values and an EMA of the weights (decay 0.999)."""
    data = config.to_dict()
    for key, value in best.items():
        section, _, name = key.partition(".")
        data[section][name] = value
    data["train"]["ema"] = EMA
    return Config.from_dict(data, source="the demo's final run")


@step("train", "Final training")
def _train(state: DemoState) -> str:
    from babysit.training.checkpoint import list_checkpoints
    from babysit.training.run import train

    cfg = final_config(state.config, state.best)
    run = train(cfg, task=state.task, out=state.dir / FINAL, quiet=state.console is None)
    if state.console is not None:
        for f in run.findings[:5]:
            state.console.print(f"  {f['severity']}: {f['code']}: {f['message']}", markup=False)
    found = [list_checkpoints(run.dir / "checkpoints" / sub) for sub in ("", "ema")]
    if run.diverged or not all(found):  # a result, as babysit train's exit 1: no ensemble
        why = "diverged" if run.diverged else "left no checkpoint"
        raise CheckFailed(f"the final run {why}: see {run.dir / 'report.html'}")
    state.final_members = [max(files, key=lambda c: c.value).path for files in found]
    score = run.best.get(f"val_{state.task.metric}")
    first = f"; first finding: {run.findings[0]['code']}" if run.findings else ""
    return f"best val {state.task.metric} {score:.4f} at epoch {run.best.get('epoch')}{first}"


@step("ensemble", "Ensemble")
def _ensemble(state: DemoState) -> str:
    from babysit.ensembles import ensemble

    result = ensemble(
        state.final_members,
        from_study=state.dir / STUDY if state.top else None,
        top=state.top or None,
        task=state.task,
        out=state.dir / ENSEMBLE,
        quiet=state.console is None,
    )
    mean = result.mean_member["test_acc"]
    return (
        f"{len(result.members)} members: val acc {result.val_acc:.4f}, test acc "
        f"{result.test_acc:.4f} (the mean member's: {mean:.4f})"
    )
