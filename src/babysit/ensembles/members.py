"""Who the members are: checkpoint files found from a study, a run, or named one by one.

A member is one checkpoint file and the run dir it belongs to: the nearest folder above
it that holds ``config.toml`` (so ``<run>/checkpoints/epoch=007-val_acc=0.9412.pt`` and
an averaged ``<run>/checkpoints/ema/epoch=007-val_acc=0.9412.pt`` both belong to
``<run>``). The run's config builds the model the checkpoint's ``"model"`` state_dict is
loaded into. The sources (the notes' "Model Ensembles"):

    from_study(DIR, top=K)           the K best complete trials of the study's last stage
                                     (the latest with a complete trial, as summary.json's
                                     best), each by its best checkpoint; architectures may
                                     differ
    from_run(DIR, k=K, pick=...)     K checkpoints of one run: the K best by their
                                     validation score ("best") or the K latest ("last")
    explicit(paths)                  checkpoint files, or run dirs (their best checkpoint)

"Best" follows the task's direction (``val_acc``: higher; ``val_loss``: lower). Every
problem raises ConfigError (a dir that is not a run or a study, K out of range, a study
with no complete trial) or CheckpointError (no checkpoint), in one line, before anything
is computed or written.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from babysit.errors import BabysitError, CheckpointError, ConfigError
from babysit.training.checkpoint import CheckpointFile, list_checkpoints
from babysit.tuning.summary import SUMMARY_FILE, Study

__all__ = [
    "PICKS",
    "MemberSpec",
    "best_checkpoint",
    "explicit",
    "from_run",
    "from_study",
    "run_dir_of",
]

Pick = Literal["best", "last"]
PICKS: tuple[Pick, ...] = ("best", "last")
# a run's direction ("max" | "min") from its dir: the task's, known once the task is built
Direction = Callable[[Path], str]


@dataclass(frozen=True)
class MemberSpec:
    """One member: a checkpoint file, its run dir, and where it came from."""

    path: Path  # the checkpoint file
    run_dir: Path  # the nearest folder above ``path`` that holds config.toml
    source: str  # "study" | "run" | "seeds" | "member" (named by the caller)


def run_dir_of(path: Path) -> Path:
    """The nearest folder above a checkpoint file that holds ``config.toml``."""
    for parent in path.resolve().parents:
        if (parent / "config.toml").is_file():
            return parent
    raise CheckpointError(
        f"{path}: no config.toml in any folder above it, so the model it holds cannot be "
        "built; give a checkpoint inside a babysit run dir"
    )


def _checkpoints(run_dir: Path) -> list[CheckpointFile]:
    found = list_checkpoints(run_dir / "checkpoints")
    if not found:
        raise CheckpointError(
            f"{run_dir}: no checkpoint in {run_dir / 'checkpoints'} (did the run end an epoch?)"
        )
    return found


def _ranked(files: Sequence[CheckpointFile], direction: str) -> list[CheckpointFile]:
    """Best first by the score in the name; ties go to the later epoch."""
    sign = -1.0 if direction == "max" else 1.0
    return sorted(files, key=lambda c: (sign * c.value, -c.epoch))


def best_checkpoint(run_dir: Path, direction: str) -> Path:
    """The run's checkpoint with the best validation score in its name."""
    return _ranked(_checkpoints(run_dir), direction)[0].path


def _check_count(k: int, flag: str) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"{flag} {k!r}: give a whole number of members >= 1")


def _run_dir(directory: Path, flag: str) -> Path:
    if not directory.is_dir():
        raise ConfigError(f"{flag} {directory}: not a directory (give a babysit run dir)")
    if not (directory / "config.toml").is_file():
        raise ConfigError(
            f"{flag} {directory}: no config.toml, so it is not a babysit run dir "
            "(a run dir holds config.toml and checkpoints/)"
        )
    return directory


def from_run(directory: Path, *, k: int, pick: str, direction: Direction) -> list[MemberSpec]:
    """``k`` checkpoints of one run: the best by their score, or the last by epoch."""
    _check_count(k, "--checkpoints")
    if pick not in PICKS:
        raise ConfigError(f"--pick {pick!r}: use one of {', '.join(PICKS)}")
    run = _run_dir(directory, "--from-run")
    files = _checkpoints(run)
    if k > len(files):
        raise ConfigError(
            f"--checkpoints {k}: {run} holds {len(files)} checkpoint(s); give at most "
            f"{len(files)} (or train it with a larger train.keep_best / train.keep_last)"
        )
    chosen = _ranked(files, direction(run)) if pick == "best" else files[::-1]
    return [MemberSpec(c.path, run.resolve(), "run") for c in chosen[:k]]


def _read_study(directory: Path) -> Study:
    if not (directory / SUMMARY_FILE).is_file():
        raise ConfigError(
            f"--from-study {directory}: no {SUMMARY_FILE}, so it is not a study dir "
            "(babysit search writes one)"
        )
    try:
        study = Study.from_dir(directory)
    except (BabysitError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"--from-study {directory}: cannot read {SUMMARY_FILE}: {exc}") from None
    if not isinstance(study.trials, list) or not all(isinstance(t, dict) for t in study.trials):
        raise ConfigError(f"--from-study {directory}: {SUMMARY_FILE} has no list of trials")
    return study


def from_study(directory: Path, *, top: int) -> list[MemberSpec]:
    """The best checkpoints of the ``top`` best complete trials of the study's last stage.

    "Last stage": the latest stage with a complete trial (later stages train longer, so
    only their scores compare; summary.json's best is chosen the same way).
    """
    _check_count(top, "--top")
    if not directory.is_dir():
        raise ConfigError(f"--from-study {directory}: not a directory (give a study dir)")
    study = _read_study(directory)
    complete = [
        t
        for t in study.trials
        if t.get("state") == "complete" and isinstance(t.get("value"), int | float)
    ]
    if not complete:
        raise ConfigError(
            f"--from-study {directory}: no complete trial to take members from "
            "(every trial was pruned, diverged or failed)"
        )
    last = max(int(t.get("stage") or 0) for t in complete)
    pool = [t for t in complete if int(t.get("stage") or 0) == last]
    if top > len(pool):
        raise ConfigError(
            f"--top {top}: the study's last stage ({last}) has {len(pool)} complete trial(s); "
            f"give at most {len(pool)}"
        )
    direction = str(study.study.get("direction", "max"))
    sign = -1.0 if direction == "max" else 1.0
    pool.sort(key=lambda t: (sign * float(t["value"]), int(t.get("number", 0))))
    members = []
    for trial in pool[:top]:
        if not isinstance(trial.get("dir"), str):
            raise ConfigError(
                f"--from-study {directory}: trial {trial.get('number')} has no run dir (a user "
                "objective trains its own models), so it has no checkpoint to ensemble"
            )
        run = _run_dir(directory / trial["dir"], f"--from-study {directory}: trial")
        members.append(MemberSpec(best_checkpoint(run, direction), run.resolve(), "study"))
    return members


def explicit(paths: Iterable[str | os.PathLike[str]], *, direction: Direction) -> list[MemberSpec]:
    """Checkpoint files as given; a run dir stands for its best checkpoint."""
    members = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            run = _run_dir(path, "member")
            members.append(
                MemberSpec(best_checkpoint(run, direction(run)), run.resolve(), "member")
            )
        elif path.is_file():
            members.append(MemberSpec(path.resolve(), run_dir_of(path), "member"))
        else:
            raise CheckpointError(f"member {path}: no such checkpoint file or run dir")
    return members
