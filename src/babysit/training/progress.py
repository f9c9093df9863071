"""Progress output: a rich progress bar on a terminal, one plain line per epoch otherwise."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from babysit.training.callbacks import Callback

__all__ = ["ProgressCallback"]


def _epoch_line(metrics: dict[str, Any]) -> str:
    parts = [f"epoch {metrics['epoch']}"]
    for key in ("train_loss", "train_acc", "val_loss"):
        if key in metrics:
            parts.append(f"{key} {metrics[key]:.4f}")
    parts += [
        f"{k} {v:.4f}" for k, v in metrics.items() if k.startswith("val_") and k != "val_loss"
    ]
    return "  ".join(parts)


class ProgressCallback(Callback):
    """Shows training progress; silent when ``quiet``."""

    def __init__(self, *, quiet: bool, console: Console | None = None) -> None:
        self.quiet = quiet
        self.console = console or Console(stderr=True)
        self.progress: Progress | None = None
        self.task_id: Any = None

    def on_train_start(self, trainer: Any) -> None:
        if self.quiet:
            return
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
            total = trainer.config.train.epochs * len(trainer.train_batches)
            done = trainer.step
            self.task_id = self.progress.add_task("train", total=total, completed=done, info="")
            self.progress.start()

    def on_step_end(self, trainer: Any, step: int, loss: float) -> None:
        if self.progress is not None:
            self.progress.update(self.task_id, advance=1, info=f"loss {loss:.4f}")

    def on_epoch_end(self, trainer: Any, epoch: int, metrics: dict[str, Any]) -> None:
        if not self.quiet:
            self.console.print(_epoch_line(metrics), highlight=False)

    def on_train_end(self, trainer: Any) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
