"""One trial: run the objective with ``report(epoch, value)``, then tell Optuna how it ended.

``report(epoch, value)`` (the validation score after an epoch) feeds the pruner and
enforces the stage's budget:

- a non-finite value: the trial diverged (stopped, not retried);
- ``epoch >= `` the stage's epochs: the trial is complete, scored by its best report;
- the pruner says stop: :class:`optuna.TrialPruned`; the trial is recorded as pruned
  with its last score (Optuna keeps the last reported value as the pruned trial's value).

Each of these ends raises inside the objective to stop its training; the Reporter also
remembers the end, so an objective that swallows the exception is still recorded right.
How a trial ended: Optuna state COMPLETE, PRUNED, or FAIL with the user attribute
``diverged`` (a NaN/inf loss or score) or ``error`` (:class:`TrialFailed`, or the
objective raised another exception, which is re-raised). An interrupt (Ctrl-C, SIGTERM
turned into KeyboardInterrupt, SystemExit) or a database that stopped answering
(StorageUnavailable) leaves the trial RUNNING: its process is gone, so whoever
continues the study fails it and re-queues its slot (slots.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import optuna
from optuna.trial import FrozenTrial, TrialState

from babysit._io import json_safe
from babysit.tuning._retry import StorageUnavailable

__all__ = [
    "Diverged",
    "Objective",
    "Reporter",
    "Runner",
    "StageDone",
    "TrialFailed",
    "TrialSpec",
    "run_trial",
    "user_runner",
]

Objective = Callable[[dict[str, Any], Callable[[int, float], None]], float]


class Diverged(Exception):
    """The trial's loss or score became NaN/inf."""


class TrialFailed(Exception):
    """The trial could not be scored (e.g. a pre-training check failed); the search goes on."""


class StageDone(Exception):
    """``report()`` reached the stage's epochs: stop training, the trial is complete."""


@dataclass(frozen=True)
class TrialSpec:
    """What a trial is asked to do."""

    number: int  # Optuna's trial number
    stage: int  # index into [[search.stage]]
    epochs: float  # the stage's budget
    params: dict[str, Any]  # dotted config key -> value
    dir: Path  # trials/s<stage>-<number>/ (made only by objectives that write files)


class Reporter:
    """The ``report(epoch, value)`` an objective calls after each epoch."""

    def __init__(
        self,
        trial: optuna.Trial,
        *,
        epochs: float,
        direction: Literal["max", "min"],
        prune: bool = True,
    ) -> None:
        """prune=False: never ask the pruner (a population-based training stage)."""
        self.trial, self.epochs, self.direction = trial, epochs, direction
        self.prune = prune
        self.values: list[tuple[float, float]] = []  # (epoch, score)
        self.steps: set[int] = set()  # Optuna steps reported
        self.ended: Literal["diverged", "stage", "pruned"] | None = None

    @property
    def last(self) -> float | None:
        return self.values[-1][1] if self.values else None

    @property
    def best(self) -> float | None:
        scores = [v for _, v in self.values if math.isfinite(v)]
        if not scores:
            return None
        return max(scores) if self.direction == "max" else min(scores)

    def __call__(self, epoch: float, value: float) -> None:
        if self.ended is not None:  # the objective went on after being told to stop
            return
        value = float(value)
        self.values.append((float(epoch), value))
        if not math.isfinite(value):
            self.ended = "diverged"
            raise Diverged(f"score {value} at epoch {epoch}")
        # Optuna's steps are whole numbers: reports within epoch k are step k; the pruner
        # sees the first of them (Optuna keeps one value per step)
        step = math.ceil(epoch)
        if step not in self.steps:
            self.steps.add(step)
            self.trial.report(value, step=step)
        if epoch >= self.epochs:
            self.ended = "stage"
            raise StageDone(f"epoch {epoch} reached the stage's {self.epochs} epochs")
        if self.prune and self.trial.should_prune():
            self.ended = "pruned"
            raise optuna.TrialPruned(f"pruned at epoch {epoch} with score {value}")

    def stop_after(self, epoch: float, value: float) -> bool:
        """Report for a loop babysit drives (the trainer, a population): stop it now?

        True when the trial diverged or was pruned (``ended`` says which). Reaching the
        stage's epochs is False: that loop was given the stage's epochs and ends by itself.
        """
        try:
            self(epoch, value)
        except StageDone:
            return False
        except (Diverged, optuna.TrialPruned):
            return True
        return False


Runner = Callable[[TrialSpec, Reporter], float | None]


def user_runner(objective: Objective) -> Runner:
    """A user's ``objective(params, report)`` as a runner."""

    def run(spec: TrialSpec, report: Reporter) -> float | None:
        return objective(dict(spec.params), report)

    return run


def run_trial(
    study: optuna.Study,
    trial: optuna.Trial,
    spec: TrialSpec,
    runner: Runner,
    *,
    direction: Literal["max", "min"],
) -> FrozenTrial:
    """Run ``spec`` and tell the study how it ended; an objective's own error is re-raised."""
    report = Reporter(trial, epochs=spec.epochs, direction=direction)
    value: float | None = None
    ended: str | None = None
    try:
        value = runner(spec, report)
    except Diverged:
        ended = "diverged"
    except StageDone:
        ended = "stage"
    except optuna.TrialPruned:
        ended = "pruned"
    except TrialFailed as exc:
        trial.set_user_attr("error", str(exc))
        return study.tell(trial, state=TrialState.FAIL)
    except (KeyboardInterrupt, SystemExit, StorageUnavailable):
        raise  # the trial stays RUNNING (the database cannot be told otherwise anyway)
    except BaseException as exc:
        trial.set_user_attr("error", f"{type(exc).__name__}: {exc}")
        study.tell(trial, state=TrialState.FAIL)
        raise
    ended = report.ended or ended
    if ended == "pruned":
        trial.set_user_attr("last_score", json_safe(report.last))
        return study.tell(trial, state=TrialState.PRUNED)
    if ended is None and value is None and not report.values:
        trial.set_user_attr("error", "the objective returned None and reported no score")
        study.tell(trial, state=TrialState.FAIL)
        raise TypeError("the search objective returned None: return the validation score")
    if ended == "stage" or value is None:
        value = report.best
    if ended == "diverged" or value is None or not math.isfinite(float(value)):
        last = report.last if value is None else float(value)
        trial.set_user_attr("diverged", True)
        trial.set_user_attr("last_score", json_safe(last))
        return study.tell(trial, state=TrialState.FAIL)
    return study.tell(trial, float(value))
