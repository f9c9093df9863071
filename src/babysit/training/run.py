"""``babysit.train()``: validate the input, make the run dir, train, diagnose, report.

Bad input raises ConfigError / TaskError / DataError / CheckpointError before any file
is written (a failure while setting up removes exactly the dirs it made); a :class:`Run`
describes what the run left behind in its directory. The run holds the dir's lock
(:func:`~babysit.training.rundir.lock_run_dir`) from creating it until it returns, and
first sweeps the temp files that killed writers left. A full disk is a
:class:`~babysit.errors.RunDirError` naming the device, the file and the last good
checkpoint.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from babysit._io import write_text_atomic
from babysit.config import Config, load_config
from babysit.errors import ConfigError, RunDirError, TaskError
from babysit.monitor.log import read_metrics
from babysit.tasks import Task, task_for
from babysit.training import lifecycle
from babysit.training.callbacks import Callback
from babysit.training.checkpoint import list_checkpoints
from babysit.training.evaluate import SCORES
from babysit.training.rundir import (
    LOCK_FILE,
    check_new_run_dir,
    check_resume_dir,
    check_unlocked,
    clear_remains,
    default_run_dir,
    holds_remains,
    lock_run_dir,
    make_run_dir,
    remove_made,
    sweep_run_dir,
    write_error,
)
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
    is written. ``resume=True`` continues the run in ``out`` from its newest checkpoint
    (from epoch 0 when it has none: it was killed before its first epoch ended).
    ``trainer_factory``: called as Trainer is; a subclass changes the loss (distillation).
    """
    if resume:
        if out is None:
            raise ConfigError("--resume needs --out DIR, the run directory to continue")
        run_dir = Path(out)
        check_unlocked(run_dir)
        given = None
        if config is not None:
            given = load_config(config, overrides)
        elif overrides and (run_dir / "config.toml").is_file():
            given = load_config(run_dir / "config.toml", overrides)
        cfg = check_resume_dir(run_dir, given)
    else:
        cfg = load_config(config, overrides)
        run_dir = Path(out) if out is not None else default_run_dir(cfg)
        check_unlocked(run_dir)
        if not holds_remains(run_dir):  # the remains of a run that never checkpointed: redo
            check_new_run_dir(run_dir)
    if device is not None:
        cfg.train.device = device  # type: ignore[assignment]
    dev = select_device(cfg.train.device)
    if task is None:
        task = task_for(cfg)
    if task.metric not in SCORES and task.metric != "loss":
        known = ", ".join([*SCORES.names(), "loss"])
        raise TaskError(f"Task.metric {task.metric!r} is unknown: use one of {known}")

    made = make_run_dir(run_dir)
    with lock_run_dir(run_dir):  # a second process gets RunDirError: nothing is removed
        try:
            return _train_locked(
                run_dir, cfg, task, dev, made, resume, quiet, callbacks, trainer_factory
            )
        except OSError as exc:
            raise write_error(exc, run_dir) from None


def _train_locked(
    run_dir: Path,
    cfg: Config,
    task: Task,
    dev: torch.device,
    made: list[Path],
    resume: bool,
    quiet: bool,
    callbacks: Iterable[Callback],
    trainer_factory: Callable[..., Trainer],
) -> Run:
    """The run, in its locked dir: set up (undone on failure), check, fit, diagnose."""
    sweep_run_dir(run_dir)  # temp files of writers killed mid-write
    fresh = not resume or not list_checkpoints(run_dir / "checkpoints")
    if fresh and holds_remains(run_dir):
        clear_remains(run_dir)  # under the lock: no one else is writing them
    elif fresh and (extra := sorted(p.name for p in run_dir.iterdir() if p.name != LOCK_FILE)):
        if resume and "findings.json" in extra:
            raise RunDirError(
                f"--resume: {run_dir} holds a run that ended before its first checkpoint "
                "(findings.json says why): nothing to continue; train with another --out"
            )
        if resume:
            raise RunDirError(
                f"--resume: {run_dir} holds no checkpoint to continue from, and "
                f"{', '.join(extra[:5])} that a run does not write before it ends: move "
                "them away to start the run over"
            )
        raise RunDirError(f"--out {run_dir}: another run was written here meanwhile")
    try:
        if fresh:  # first: a run killed from here on can be resumed (from epoch 0)
            write_text_atomic(run_dir / "config.toml", cfg.to_toml())
        trainer = trainer_factory(cfg, task, run_dir, device=dev, quiet=quiet, callbacks=callbacks)
        if not fresh:
            lifecycle.resume(trainer)
            write_text_atomic(run_dir / "config.toml", cfg.to_toml())  # epochs may grow
        elif resume:  # no checkpoint to continue: the run starts over, as it was configured
            trainer.log_event("resumed", epoch=0, checkpoint=None)
    except BaseException:
        if made:  # bad input found while setting up: leave nothing half-written
            remove_made(made)
        elif fresh and not resume:
            (run_dir / "config.toml").unlink(missing_ok=True)
        raise
    failed = lifecycle.before_training(trainer) if fresh else None
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
