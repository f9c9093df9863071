"""Run directories: choose, validate (before anything is written) and create them."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

from babysit.config import Config, differing_keys, load_config
from babysit.errors import ConfigError
from babysit.training.checkpoint import list_checkpoints

__all__ = ["check_new_run_dir", "check_resume_dir", "default_run_dir"]


def default_run_dir(config: Config, root: str | os.PathLike[str] = "runs") -> Path:
    """``runs/<task>-<YYYYmmdd-HHMMSS>``, with a counter if that exists already."""
    name = config.task.name.replace(":", "-").replace("/", "-").replace(".py", "")
    base = Path(root) / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def _check_writable_parent(out: Path) -> None:
    parent = out.parent if out.parent != Path("") else Path(".")
    existing = parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"--out {out}: {existing} is a file, so {out} cannot be created")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(
            f"--out {out}: {existing} is not writable (choose a directory you can write to)"
        )


def check_new_run_dir(out: Path) -> None:
    """A fresh run needs ``out`` absent or an empty dir, in a writable place."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: is a file, expected a directory for the run")
    if out.is_dir():
        if any(out.iterdir()):
            hint = " (use --resume to continue it)" if (out / "config.toml").exists() else ""
            raise ConfigError(f"--out {out}: directory is not empty{hint}; choose a new --out")
        if not os.access(out, os.W_OK | os.X_OK):
            raise ConfigError(f"--out {out}: directory is not writable")
        return
    _check_writable_parent(out)


def check_resume_dir(out: Path, config: Config | None) -> Config:
    """A resumed run needs ``out`` to hold a run with checkpoints; returns its config.

    A config given with --resume must equal the run's, except that ``train.epochs``
    may grow (continue training for longer).
    """
    if not out.is_dir():
        raise ConfigError(f"--resume: {out} is not a run directory")
    saved_path = out / "config.toml"
    if not saved_path.is_file():
        raise ConfigError(f"--resume: {out} has no config.toml, so it is not a babysit run")
    if not list_checkpoints(out / "checkpoints"):
        raise ConfigError(
            f"--resume: {out}/checkpoints holds no checkpoint (nothing to resume from)"
        )
    saved = load_config(saved_path)
    if config is None:
        return saved
    a, b = saved.to_dict(), config.to_dict()
    a["train"].pop("epochs")
    epochs = b["train"].pop("epochs")
    if a != b:
        raise ConfigError(
            f"--resume: the config differs from {saved_path} in {', '.join(differing_keys(a, b))}; "
            "resume with the run's own config (only train.epochs may change)"
        )
    found = list_checkpoints(out / "checkpoints")
    trained = found[-1].epoch if found else 0
    if math.ceil(epochs) < trained:  # said, not done: config.toml would claim fewer epochs
        raise ConfigError(
            f"--resume: train.epochs = {epochs!r} is fewer than the {trained} epochs {out} has "
            f"trained already, so there is nothing to continue; give train.epochs > {trained}"
            " to train longer (the run and its config.toml are left as they are)"
        )
    saved.train.epochs = epochs
    return saved
