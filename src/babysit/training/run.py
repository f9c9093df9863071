"""``babysit.train()``: validate the input, make the run dir, train, diagnose, report.

Bad input raises ConfigError / TaskError / DataError / CheckpointError before any file
is written; a :class:`Run` describes what the run left behind in its directory.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from babysit._io import write_text_atomic
from babysit.config import Config, load_config
from babysit.errors import ConfigError, TaskError
from babysit.monitor.log import read_metrics
from babysit.tasks import Task, task_for
from babysit.training import lifecycle
from babysit.training.callbacks import Callback
from babysit.training.evaluate import SCORES
from babysit.training.rundir import check_new_run_dir, check_resume_dir, default_run_dir
from babysit.training.trainer import Trainer

__all__ = ["Run", "select_device", "train"]


@dataclass
class Run:
    """What a training run left behind; everything is also on disk in ``dir``."""

    dir: Path
    best: dict[str, Any] = field(default_factory=dict)  # the best epoch record
    findings: list[dict[str, Any]] = field(default_factory=list)
    diverged: bool = False
    stopped: str | None = None  # "early_stop" | "diverged" | "sanity" | "gradcheck" | None
    failed_check: str | None = None  # a pre-training check that failed
    # train.ema / train.swa: the averaged weights' best epoch, keys without the prefix plus
    # the kind: {"kind": "ema", "epoch", "step", "val_loss", "val_acc"}; None: no average
    # was evaluated (averaging off, or SWA stopped before swa_start)
    averaged_best: dict[str, Any] | None = None

    @property
    def metrics(self) -> list[dict[str, Any]]:
        return list(read_metrics(self.dir / "metrics.jsonl"))


def select_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was asked for but torch sees no CUDA GPU (use cpu)")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def train(
    config: str | os.PathLike[str] | Mapping[str, Any] | Config | None = None,
    *,
    task: Task | None = None,
    out: str | os.PathLike[str] | None = None,
    overrides: Iterable[str] = (),
    resume: bool = False,
    device: str | None = None,
    quiet: bool = False,
    callbacks: Iterable[Callback] = (),
    trainer_factory: Callable[..., Trainer] = Trainer,
) -> Run:
    """Train a task as the config says and return the :class:`Run` (its dir holds everything).

    Bad input raises ConfigError / TaskError / DataError / CheckpointError before any file
    is written. ``resume=True`` continues the run in ``out`` from its newest checkpoint.
    ``trainer_factory``: called as Trainer is; a subclass changes the loss (distillation).
    """
    if resume:
        if out is None:
            raise ConfigError("--resume needs --out DIR, the run directory to continue")
        run_dir = Path(out)
        given = None
        if config is not None:
            given = load_config(config, overrides)
        elif overrides and (run_dir / "config.toml").is_file():
            given = load_config(run_dir / "config.toml", overrides)
        cfg = check_resume_dir(run_dir, given)
    else:
        cfg = load_config(config, overrides)
        run_dir = Path(out) if out is not None else default_run_dir(cfg)
        check_new_run_dir(run_dir)
    if device is not None:
        cfg.train.device = device  # type: ignore[assignment]
    dev = select_device(cfg.train.device)
    if task is None:
        task = task_for(cfg)
    if task.metric not in SCORES and task.metric != "loss":
        known = ", ".join([*SCORES.names(), "loss"])
        raise TaskError(f"Task.metric {task.metric!r} is unknown: use one of {known}")

    created = not run_dir.exists()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--out {run_dir}: cannot create the run directory: {exc}") from None
    try:
        trainer = trainer_factory(cfg, task, run_dir, device=dev, quiet=quiet, callbacks=callbacks)
        if resume:
            lifecycle.resume(trainer)
        write_text_atomic(run_dir / "config.toml", cfg.to_toml())  # resume may extend epochs
    except BaseException:
        if created:  # bad input found while setting up: leave nothing half-written
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    failed = None if resume else lifecycle.before_training(trainer)
    if failed is not None:
        trainer.writer.close()
        run = Run(dir=run_dir, stopped=failed, failed_check=failed)
    else:
        trainer.fit()
        best = dict(trainer.best_record)
        run = Run(dir=run_dir, best=best, diverged=trainer.diverged, stopped=trainer.stop)
        if trainer.averager is not None and trainer.averager.best:
            run.averaged_best = dict(trainer.averager.best)
    run.findings = lifecycle.after_training(trainer)
    return run
