"""The default objective: train the config with a trial's hyperparameters (``babysit.train``).

Each trial is a run dir ``trials/s<stage>-<number>/`` (config.toml, metrics.jsonl,
checkpoints named with the validation score, ...), scored by the best validation score
of its run (``Run.best``; the test split is never looked at). Its config is the search's
config with the trial's values set, ``train.epochs`` set to the stage's epochs (a
fraction trains that share of an epoch's steps: the trainer) and no per-trial
report.html (the study's report covers the trials).

:class:`ReportEpochs` feeds each epoch's validation score to the trial's
``report(epoch, value)`` (the pruner, the stage's budget) and stops the run cleanly when
the trial is pruned or its score is NaN: that epoch's checkpoint is written and the run's
``stopped`` says why.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from babysit.config import Config
from babysit.tasks import task_for
from babysit.training.callbacks import Callback, TrainerView
from babysit.training.run import train
from babysit.tuning.dimensions import Choice, Dimension
from babysit.tuning.trial import Diverged, Reporter, TrialFailed, TrialSpec

__all__ = ["ReportEpochs", "TrainObjective", "config_for"]


def config_for(config: Config, params: Mapping[str, Any], *, epochs: float) -> Config:
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
    """Reports each epoch's validation score; a pruned or NaN trial stops the run cleanly.

    The epoch reported is the epoch reached: a fractional last epoch reports
    ``train.epochs`` itself (0.5), so the stage's budget is met exactly.
    """

    def __init__(self, report: Reporter) -> None:
        self.report = report

    def on_epoch_end(self, trainer: TrainerView, epoch: int, metrics: dict[str, Any]) -> None:
        reached = min(float(epoch), float(trainer.config.train.epochs))
        if self.report.stop_after(reached, float(metrics[trainer.metric_key])):
            trainer.stop = self.report.ended  # "diverged" | "pruned"


class TrainObjective:
    """Trains a trial with ``babysit.train`` on the task the config names (built once)."""

    def __init__(self, config: Config, space: Mapping[str, Dimension]) -> None:
        self.config = config
        self.task = task_for(config)  # a bad task is answered before anything is written
        self.metric, self.direction = self.task.metric, self.task.direction
        if not any(key.startswith("model.") for key in space):  # the one [model] every trial has
            self.task.model_factory(config.model_table())
        for key, dim in space.items():  # [model] keys are free-form: let the factory judge
            if key.startswith("model."):
                for value in _extremes(dim):
                    cfg = config_for(config, {key: value}, epochs=1)
                    self.task.model_factory(cfg.model_table())

    def __call__(self, spec: TrialSpec, report: Reporter) -> float | None:
        cfg = config_for(self.config, spec.params, epochs=spec.epochs)
        run = train(cfg, task=self.task, out=spec.dir, quiet=True, callbacks=[ReportEpochs(report)])
        if run.diverged:
            raise Diverged(f"trial {spec.number}: the loss became NaN/inf")
        if report.ended is not None:  # pruned, a NaN score, or the stage's epochs reached
            return None  # run_trial scores it from the reports
        value = run.best.get(f"val_{self.metric}")
        if value is None:
            why = f"the {run.failed_check} check failed" if run.failed_check else "no epoch ended"
            raise TrialFailed(f"trial {spec.number}: {why}")
        return float(value)
