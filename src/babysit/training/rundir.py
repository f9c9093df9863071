"""Run directories: choose, validate (before anything is written), create and lock them.

One process at a time trains in a run dir: :func:`lock_run_dir` takes an exclusive
``fcntl.flock`` on ``<dir>/.lock`` (the kernel drops it when the process ends, however it
ends, so a SIGKILL leaves no stale lock) and a second process gets :class:`RunDirError`
naming the PID that holds it. A run killed before its first checkpoint leaves only its
remains (:func:`holds_remains`): a new ``train`` or a ``--resume`` starts it over.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from babysit._io import is_disk_full, sweep_stale_temps
from babysit.config import Config, differing_keys, load_config
from babysit.errors import ConfigError, RunDirError
from babysit.training.checkpoint import list_checkpoints

if sys.platform != "win32":
    import fcntl

__all__ = [
    "LOCK_FILE",
    "check_new_run_dir",
    "check_resume_dir",
    "check_unlocked",
    "clear_remains",
    "default_run_dir",
    "holds_remains",
    "lock_run_dir",
    "make_run_dir",
    "remove_made",
    "sweep_run_dir",
    "write_error",
]

LOCK_FILE = ".lock"
# what a run writes before its first checkpoint; a run that ended (diverged, or a check
# failed) also wrote findings.json: its dir is a result, kept. Anything else is the user's.
_RUN_FILES = {
    "config.toml",
    "metrics.jsonl",
    "sanity.json",
    "gradcheck.json",
    "filters",
    "checkpoints",
    LOCK_FILE,
}


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
    """A fresh run needs ``out`` absent or an empty dir (a lock file aside), in a writable place."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: is a file, expected a directory for the run")
    if out.is_dir():
        if any(p.name != LOCK_FILE for p in out.iterdir()):
            hint = " (use --resume to continue it)" if (out / "config.toml").exists() else ""
            raise ConfigError(f"--out {out}: directory is not empty{hint}; choose a new --out")
        if not os.access(out, os.W_OK | os.X_OK):
            raise ConfigError(f"--out {out}: directory is not writable")
        return
    _check_writable_parent(out)


def holds_remains(out: Path) -> bool:
    """Whether ``out`` holds only what a run that never wrote a checkpoint leaves behind.

    Its config.toml, and nothing but the files a run writes before it ends (metrics.jsonl,
    the checks' JSONs, filters/, an empty checkpoints/, temp files): a run killed (or whose
    user code failed) before its first epoch ended. Training there again starts it over.
    """
    if not (out / "config.toml").is_file() or list_checkpoints(out / "checkpoints"):
        return False
    return all(p.name in _RUN_FILES or p.name.endswith(".tmp") for p in out.iterdir())


def clear_remains(out: Path) -> None:
    """Remove the remains of a run that never checkpointed (all but the lock file)."""
    for path in out.iterdir():
        if path.name == LOCK_FILE:
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def check_resume_dir(out: Path, config: Config | None) -> Config:
    """A resumed run needs ``out`` to hold a babysit run; returns its config.

    A config given with --resume must equal the run's, except that ``train.epochs``
    may grow (continue training for longer). A run with no checkpoint yet (killed
    during its first epoch) resumes from epoch 0.
    """
    if not out.is_dir():
        raise ConfigError(f"--resume: {out} is not a run directory")
    saved_path = out / "config.toml"
    if not saved_path.is_file() and all(p.name == LOCK_FILE for p in out.iterdir()):
        raise ConfigError(
            f"--resume: {out} holds no config.toml: its run was stopped before it began; "
            f"start it again with babysit train CONFIG --out {out}"
        )
    if not saved_path.is_file():
        raise ConfigError(f"--resume: {out} has no config.toml, so it is not a babysit run")
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


def make_run_dir(out: Path) -> list[Path]:
    """Create ``out`` and its missing parents; return the dirs this call made, outermost first."""
    missing = [p for p in [out, *out.parents] if not p.exists()][::-1]
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--out {out}: cannot create the run directory: {exc}") from None
    return missing


def remove_made(made: list[Path]) -> None:
    """Undo :func:`make_run_dir`: the run dir and what is in it, then each parent it made."""
    if not made:
        return
    shutil.rmtree(made[-1], ignore_errors=True)
    for parent in reversed(made[:-1]):
        try:
            parent.rmdir()
        except OSError:
            break  # no longer empty (someone else wrote there) or gone: leave it


def sweep_run_dir(out: Path) -> list[Path]:
    """Remove the temp files of writers that died mid-write (run dir, checkpoints/, plots/)."""
    return [p for d in (out, out / "checkpoints", out / "plots") for p in sweep_stale_temps(d)]


@contextmanager
def lock_run_dir(out: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``out`` while inside; ``out/.lock`` names the holder's PID.

    Another process holding it: :class:`RunDirError` naming its PID. The kernel releases
    the lock when this process ends, so a killed run never leaves a stale lock behind; a
    clean exit also removes the file (a lock taken on a file since unlinked is retaken).
    """
    if sys.platform == "win32":  # no flock: one process at a time is up to the user
        yield
        return
    path = out / LOCK_FILE
    fd = _take_lock(out, path)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)  # before closing: a waiter then retakes a new file
        os.close(fd)  # releases the lock


def check_unlocked(out: Path) -> None:
    """RunDirError naming the PID when a live process holds ``out``'s lock; changes nothing.

    Asked first, so that a second ``train`` says who is training there rather than that the
    dir is not empty.
    """
    if sys.platform == "win32":
        return
    path = out / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # no lock file (nobody holds it), or none we can read
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        raise _held(out, fd) from None
    finally:
        os.close(fd)


def _held(out: Path, fd: int) -> RunDirError:
    holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    pid = f"PID {holder}" if holder.isdigit() else "PID unknown"
    return RunDirError(
        f"{out}: another babysit process ({pid}) is training in this run directory "
        f"(it holds {LOCK_FILE}); wait for it to end or choose another --out"
    )


def _take_lock(out: Path, path: Path) -> int:
    """An fd of ``path`` locked with LOCK_EX, the file holding this PID; else RunDirError.

    A lock held with no PID written is a moment's probe (:func:`check_unlocked`) or a
    holder about to write its PID: tried again a few times before giving up.
    """
    tries = 0
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise RunDirError(
                f"{out}: cannot write in the run directory ({exc.strerror}): a run writes its "
                f"lock file ({LOCK_FILE}), log and checkpoints there"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            error = _held(out, fd)
            os.close(fd)
            tries += 1
            if "PID unknown" in str(error) and tries < 50:
                time.sleep(0.01)
                continue
            raise error from None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
            return fd
        os.close(fd)  # the holder removed that file as we locked it: lock the new one


def _mount_point(path: str | os.PathLike[str]) -> str:
    """The mount point of the file system that holds ``path`` (what "the device" means)."""
    p = Path(os.path.abspath(path))
    while not os.path.ismount(p) and p != p.parent:
        p = p.parent
    return str(p)


def write_error(exc: OSError, out: Path) -> RunDirError:
    """One line for an OSError of a run: the file, the cause, and the last good checkpoint.

    A full disk (ENOSPC, EDQUOT) says so and names the device (its mount point); the
    atomic writes left no partial file behind, so the newest checkpoint is a good one.
    """
    file = exc.filename if exc.filename is not None else out
    saved = list_checkpoints(out / "checkpoints")
    last = (
        f"the last good checkpoint is {saved[-1].path}" if saved else "there is no checkpoint yet"
    )
    if is_disk_full(exc):
        return RunDirError(
            f"no space left on device {_mount_point(file)} writing {file}; {last} (free "
            f"some space, then continue with: babysit train --resume --out {out})"
        )
    return RunDirError(f"{file}: {exc.strerror or exc}; {last}")
