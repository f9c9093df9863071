"""The default objective: train the config with a trial's hyperparameters (``babysit.train``).

Each trial is a run dir ``trials/s<stage>-<number>/`` (config.toml, metrics.jsonl,
checkpoints named with the validation score, ...), scored by the best validation score
of its run (``Run.best``; the test split is never looked at). Its config is the search's
config with the trial's values set, ``train.epochs`` set by the stage and no per-trial
report.html (the study's report covers the trials). Every epoch's validation score goes to
``report(epoch, value)`` (a trainer callback), so the pruners see it; a pruned trial stops
training after that epoch.

Fractional stage epochs: the trainer runs whole epochs, so a stage of ``e`` epochs trains
``max(1, ceil(e))`` (:func:`trained_epochs`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import optuna

from babysit.config import Config
from babysit.tasks import task_for
from babysit.training.callbacks import Callback, TrainerView
from babysit.training.run import train
from babysit.tuning.dimensions import Choice, Dimension
from babysit.tuning.trial import Diverged, Reporter, StageDone, TrialFailed, TrialSpec

__all__ = ["ReportEpochs", "TrainObjective", "config_for", "trained_epochs"]


def trained_epochs(epochs: float) -> int:
    """Whole epochs the trainer runs for a stage of ``epochs`` (at least 1)."""
    return max(1, math.ceil(epochs))


def config_for(config: Config, params: Mapping[str, Any], *, epochs: int) -> Config:
    """``config`` with each dotted key of ``params`` set, ``epochs`` epochs, no report page."""
    data = config.to_dict()
    for key, value in params.items():
        section, _, name = key.partition(".")
        data[section][name] = value
    data["train"]["epochs"] = epochs
    data["train"]["report"] = False
    return Config.from_dict(data, source="search trial")


def _extremes(dim: Dimension) -> tuple[Any, ...]:
    """The values that bound what a dimension gives: its ends, or every choice."""
    return dim.choices if isinstance(dim, Choice) else (dim.low, dim.high)


class ReportEpochs(Callback):
    """Each epoch's validation score to ``report``; training stops when the trial is over.

    ``report`` raises to end a trial (pruned, diverged, the stage's epochs reached) and
    remembers why (``Reporter.ended``, which ``run_trial`` reads); here the raise becomes
    ``trainer.stop``, so the run ends after this epoch with its files closed.
    """

    def __init__(self, report: Reporter) -> None:
        self.report = report

    def on_epoch_end(self, trainer: TrainerView, epoch: int, metrics: dict[str, Any]) -> None:
        try:
            self.report(epoch, metrics[trainer.metric_key])
        except (Diverged, optuna.TrialPruned):
            trainer.stop = self.report.ended
        except StageDone:
            pass  # the stage's last epoch: the run ends here anyway (trained_epochs)


class TrainObjective:
    """Trains a trial with ``babysit.train`` on the task the config names (built once)."""

    def __init__(self, config: Config, space: Mapping[str, Dimension]) -> None:
        self.config = config
        self.task = task_for(config)  # a bad task is answered before anything is written
        self.metric, self.direction = self.task.metric, self.task.direction
        for key, dim in space.items():  # [model] keys are free-form: let the factory judge
            if key.startswith("model."):
                for value in _extremes(dim):
                    cfg = config_for(config, {key: value}, epochs=1)
                    self.task.model_factory(cfg.model_table())

    def __call__(self, spec: TrialSpec, report: Reporter) -> float:
        cfg = config_for(self.config, spec.params, epochs=trained_epochs(spec.epochs))
        run = train(cfg, task=self.task, out=spec.dir, quiet=True, callbacks=[ReportEpochs(report)])
        if run.diverged:
            raise Diverged(f"trial {spec.number}: the loss became NaN/inf")
        value = run.best.get(f"val_{self.metric}")
        if value is None:
            why = f"the {run.failed_check} check failed" if run.failed_check else "no epoch ended"
            raise TrialFailed(f"trial {spec.number}: {why}")
        return float(value)
