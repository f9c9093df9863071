"""The trainer's callbacks: what they may see of it, and the built-ins.

A callback sees the trainer (through :class:`TrainerView`) at five symmetric points:
train start/end, epoch start/end and after every optimizer step; ``train()`` adds two
more around the loop: each pre-training check's report, and the findings at the end.
It may set ``trainer.stop = "reason"`` to end the run after the current epoch (a clean
stop: that epoch's checkpoint is written, ``Run.stopped`` is the reason). A
callback with state returns it from ``state_dict()``: it goes into every checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn

from babysit._render import TabularReport, print_report
from babysit.checks.gates import GATES
from babysit.config import Config
from babysit.monitor.diagnose import Finding
from babysit.monitor.log import AVERAGE_KINDS
from babysit.training.checkpoint import checkpoint_name, prune_checkpoints, save_checkpoint

if TYPE_CHECKING:  # averaging.py imports is_better from here
    from babysit.training.averaging import Averager

__all__ = [
    "AveragedCheckpointer",
    "Callback",
    "Checkpointer",
    "EarlyStopping",
    "ProgressCallback",
    "TrainerView",
    "checkpointers",
    "is_better",
]


class TrainerView(Protocol):
    """What a callback may read on the trainer, set (``stop``) and call."""

    @property
    def config(self) -> Config: ...
    @property
    def run_dir(self) -> Path: ...
    @property
    def model(self) -> nn.Module: ...
    @property
    def epoch(self) -> int: ...  # the last completed epoch
    @property
    def step(self) -> int: ...  # optimizer steps taken
    @property
    def steps_per_epoch(self) -> int: ...
    @property
    def last_epoch(self) -> int: ...  # ceil(train.epochs): a fractional last epoch counts
    @property
    def total_steps(self) -> int: ...  # optimizer steps of the whole run
    @property
    def metric_key(self) -> str: ...  # "val_<metric>", as in the epoch records
    @property
    def direction(self) -> str: ...  # "max" | "min": which way the metric improves
    @property
    def best_epoch(self) -> int | None: ...

    stop: str | None  # set it to end the run after the current epoch

    def log_event(self, what: str, **fields: Any) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...


class Callback:
    """Base class with no-op hooks; override the ones you need."""

    def on_train_start(self, trainer: TrainerView) -> None:
        """Called once before the first epoch (also after a resume)."""

    def on_epoch_start(self, trainer: TrainerView, epoch: int) -> None:
        """Called before the first step of ``epoch`` (1-based)."""

    def on_step_end(self, trainer: TrainerView, step: int, loss: float) -> None:
        """Called after each optimizer step with the step's total loss."""

    def on_epoch_end(self, trainer: TrainerView, epoch: int, metrics: dict[str, Any]) -> None:
        """Called after validation with the epoch record."""

    def on_train_end(self, trainer: TrainerView) -> None:
        """Called once after the last epoch, whatever the reason it ended."""

    def on_check_end(self, trainer: TrainerView, name: str, report: TabularReport) -> None:
        """Called after each pre-training check (``train.sanity``, ``train.gradcheck``)."""

    def on_run_end(
        self, trainer: TrainerView, findings: Sequence[Finding], report: Path | None
    ) -> None:
        """Called last: the run's findings (most severe first) and its HTML report, if any."""

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs back (tensors and plain types); none by default."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`state_dict`."""


def is_better(value: float, best: float | None, direction: str) -> bool:
    if best is None:
        return True
    return value > best if direction == "max" else value < best


class EarlyStopping(Callback):
    """Stop when the validation metric has not improved for ``patience`` epochs.

    The best weights are kept (on the CPU) and restored at the end of training.
    """

    def __init__(self, patience: int | None) -> None:
        self.patience = patience
        self.bad_epochs = 0
        self.best_state: dict[str, torch.Tensor] | None = None

    def on_epoch_end(self, trainer: TrainerView, epoch: int, metrics: dict[str, Any]) -> None:
        if trainer.best_epoch != epoch:
            self.bad_epochs += 1
        else:
            self.bad_epochs = 0
            if self.patience is not None:  # only then are they restored
                state = trainer.model.state_dict().items()
                self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in state}
        if self.patience is not None and self.bad_epochs >= self.patience:
            trainer.stop = "early_stop"

    def on_train_end(self, trainer: TrainerView) -> None:
        if self.best_state is not None:
            trainer.model.load_state_dict(self.best_state)

    def state_dict(self) -> dict[str, Any]:
        return {"bad_epochs": self.bad_epochs, "best_state": self.best_state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.bad_epochs = int(state["bad_epochs"])
        self.best_state = state["best_state"]


class Checkpointer(Callback):
    """Save ``trainer.state_dict()`` at every epoch end; keep the best and the last few.

    The file is named after the epoch and its validation score (``epoch=007-val_acc=0.9412.pt``);
    ``keep_best`` files are kept by that score, ``keep_last`` by recency.
    """

    def __init__(self, directory: Path, *, keep_best: int, keep_last: int) -> None:
        self.directory = directory
        self.keep_best = keep_best
        self.keep_last = keep_last

    def score_key(self, trainer: TrainerView) -> str:
        """The epoch-record key of the score a file is named and kept by."""
        return trainer.metric_key

    def state(self, trainer: TrainerView) -> dict[str, Any]:
        return trainer.state_dict()

    def on_epoch_end(self, trainer: TrainerView, epoch: int, metrics: dict[str, Any]) -> None:
        key = self.score_key(trainer)
        if key not in metrics:  # an average that has not started (SWA before swa_start)
            return
        name = checkpoint_name(epoch, trainer.metric_key, float(metrics[key]))
        path = save_checkpoint(self.directory / name, self.state(trainer))
        prune_checkpoints(
            self.directory,
            keep_best=self.keep_best,
            keep_last=self.keep_last,
            direction=trainer.direction,
        )
        trainer.log_event("checkpoint", path=self.label(path))

    def label(self, path: Path) -> str:
        return path.name


class AveragedCheckpointer(Checkpointer):
    """The averaged weights (train.ema / train.swa) in ``<directory>/<kind>/``, named and kept
    like the raw ones but by the averaged model's own validation score.

    Each file is ``Averager.checkpoint()``: its ``"model"`` loads into the task's model
    (strict), as a regular checkpoint's does. It is written before the regular checkpoint
    of the same epoch, which holds the average's state for a resume.
    """

    def __init__(
        self, averager: Averager, directory: Path, *, keep_best: int, keep_last: int
    ) -> None:
        super().__init__(directory / averager.kind, keep_best=keep_best, keep_last=keep_last)
        self.averager = averager

    def score_key(self, trainer: TrainerView) -> str:
        return f"{self.averager.kind}_{trainer.metric_key}"

    def state(self, trainer: TrainerView) -> dict[str, Any]:
        return self.averager.checkpoint(trainer.config)

    def label(self, path: Path) -> str:
        return f"{self.averager.kind}/{path.name}"


def checkpointers(
    directory: Path, keep_best: int, keep_last: int, averager: Averager | None
) -> list[Checkpointer]:
    """The trainer's last callbacks: the averaged weights' checkpointer (when averaging),
    then the run's own, so that its checkpoint holds every other callback's new state."""
    keep = {"keep_best": keep_best, "keep_last": keep_last}
    averaged = [] if averager is None else [AveragedCheckpointer(averager, directory, **keep)]
    return [*averaged, Checkpointer(directory, **keep)]


_SHOWN = ("val_", *(f"{kind}_val_" for kind in AVERAGE_KINDS))


def _epoch_line(metrics: dict[str, Any]) -> str:
    parts = [f"epoch {metrics['epoch']}"]
    for key in ("train_loss", "train_acc", "val_loss"):
        if key in metrics:
            parts.append(f"{key} {metrics[key]:.4f}")
    parts += [  # val_acc, and an average's: ema_val_acc, swa_val_acc
        f"{k} {v:.4f}"
        for k, v in metrics.items()
        if k.startswith(_SHOWN) and not k.endswith("val_loss")
    ]
    return "  ".join(parts)


class ProgressCallback(Callback):
    """Renders a run for a person (``quiet`` leaves it out).

    Progress goes to ``console`` (default stderr): a rich progress bar on a terminal and
    one plain line per epoch. Results go to ``out`` (default stdout): the pre-training
    checks' tables, the findings and the report's path.
    """

    def __init__(self, *, console: Console | None = None, out: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.out = out  # None: print_report's stdout console for tables, a plain one for lines
        self.progress: Progress | None = None
        self.task_id: Any = None

    def on_check_end(self, trainer: TrainerView, name: str, report: TabularReport) -> None:
        print_report(report, title=GATES[name].title, console=self.out)

    def on_train_start(self, trainer: TrainerView) -> None:
        self.console.print(f"babysit: training {trainer.config.task.name} -> {trainer.run_dir}")
        if self.console.is_terminal:
            self.progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeRemainingColumn(),
                console=self.console,
                transient=True,
            )
            self.task_id = self.progress.add_task(
                "train", total=trainer.total_steps, completed=trainer.step, info=""
            )
            self.progress.start()

    def on_step_end(self, trainer: TrainerView, step: int, loss: float) -> None:
        if self.progress is not None:
            self.progress.update(self.task_id, advance=1, info=f"loss {loss:.4f}")

    def on_epoch_end(self, trainer: TrainerView, epoch: int, metrics: dict[str, Any]) -> None:
        self.console.print(_epoch_line(metrics), highlight=False)

    def on_train_end(self, trainer: TrainerView) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    def on_run_end(
        self, trainer: TrainerView, findings: Sequence[Finding], report: Path | None
    ) -> None:
        out = self.out or Console(soft_wrap=True)  # a finding's line is not cut to a width
        for finding in findings:
            out.print(str(finding), markup=False, highlight=False)
        if report is not None:
            out.print(f"babysit: report written to {report}", markup=False, highlight=False)
