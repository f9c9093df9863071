"""The trainer's Callback protocol and its built-ins: checkpoints and early stopping.

A callback sees the trainer at five symmetric points: train start/end, epoch start/end
and after every optimizer step. It may set ``trainer.stop = "reason"`` to end the run
after the current epoch.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from babysit.training.checkpoint import (
    capture_rng,
    checkpoint_name,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
)

if TYPE_CHECKING:
    from babysit.training.trainer import Trainer

__all__ = ["Callback", "Checkpointer", "EarlyStopping"]


class Callback:
    """Base class with no-op hooks; override the ones you need."""

    def on_train_start(self, trainer: Trainer) -> None:
        """Called once before the first epoch (also after a resume)."""

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        """Called before the first step of ``epoch`` (1-based)."""

    def on_step_end(self, trainer: Trainer, step: int, loss: float) -> None:
        """Called after each optimizer step with the step's total loss."""

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, Any]) -> None:
        """Called after validation with the epoch record."""

    def on_train_end(self, trainer: Trainer) -> None:
        """Called once after the last epoch, whatever the reason it ended."""


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

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, Any]) -> None:
        if trainer.best_epoch == epoch:
            self.bad_epochs = 0
            self.best_state = {
                k: v.detach().to("cpu", copy=True) for k, v in trainer.model.state_dict().items()
            }
        else:
            self.bad_epochs += 1
        if self.patience is not None and self.bad_epochs >= self.patience:
            trainer.stop = "early_stop"

    def on_train_end(self, trainer: Trainer) -> None:
        if self.patience is not None and self.best_state is not None:
            trainer.model.load_state_dict(self.best_state)

    def state_dict(self) -> dict[str, Any]:
        return {"bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict[str, Any], best_path: Path | None) -> None:
        self.bad_epochs = int(state["bad_epochs"])
        if best_path is not None and best_path.exists():
            self.best_state = load_checkpoint(best_path)["model"]


class Checkpointer(Callback):
    """Save a checkpoint at every epoch end; keep the ``keep_best`` best and ``keep_last`` last."""

    def __init__(self, directory: Path, *, keep_best: int, keep_last: int) -> None:
        self.directory = directory
        self.keep_best = keep_best
        self.keep_last = keep_last

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, Any]) -> None:
        name = checkpoint_name(epoch, trainer.metric_key, float(metrics[trainer.metric_key]))
        state = {
            "model": trainer.model.state_dict(),
            "optimizer": trainer.optimizer.state_dict(),
            "scheduler": trainer.controller.state_dict(),
            "early_stopping": trainer.early_stopping.state_dict(),
            "epoch": epoch,
            "step": trainer.step,
            "best_epoch": trainer.best_epoch,
            "best_value": trainer.best_value,
            "rng": capture_rng(trainer.generator),
            "config": trainer.config.to_toml(),
        }
        path = save_checkpoint(self.directory / name, copy.copy(state))
        prune_checkpoints(
            self.directory,
            keep_best=self.keep_best,
            keep_last=self.keep_last,
            direction=trainer.task.direction,
        )
        trainer.log_event("checkpoint", path=path.name)
