"""The journal file storage, sealed against a torn last line.

Optuna's ``JournalFileBackend`` appends one JSON line per operation under a lock file. A
writer killed mid-write (or a full disk, or a crash of the machine) can leave the last
line without its newline. Optuna's reader skips such a line while it is last, but its
next append is written straight after the torn bytes: the appended operation becomes
part of one undecodable line, is lost, and every later read fails ("Invalid log format"
or an AttributeError in the replay) — the whole study is unreadable.

:class:`SealedJournalFileBackend` appends under the same lock (``JournalFileSymlinkLock``
on ``journal.log.lock``, so plain Optuna processes and ``optuna-dashboard`` still
interoperate) after cutting a torn tail back to the last newline. Holding the lock
means no writer is mid-write, so a line without a newline is the remains of a dead one;
no reader applied it (they skip a line without its newline), so cutting it loses nothing
anyone saw. The cut bytes are kept in ``journal.log.torn`` for inspection.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock

__all__ = ["SealedJournalFileBackend", "cut_torn_tail"]

_CHUNK = 1 << 16


def cut_torn_tail(path: str | os.PathLike[str]) -> int:
    """Cut what follows the last newline of ``path`` (appended to ``<path>.torn``); the
    number of bytes cut. Call it only while holding the journal's lock."""
    with open(path, "r+b") as f:
        size = f.seek(0, os.SEEK_END)
        end = size
        while end > 0:  # scan back for the last newline, a chunk at a time
            start = max(0, end - _CHUNK)
            f.seek(start)
            at = f.read(end - start).rfind(b"\n")
            if at >= 0:
                end = start + at + 1
                break
            end = start
        if end == size:
            return 0
        f.seek(end)
        torn = f.read()
        with open(f"{os.fspath(path)}.torn", "ab") as keep:
            keep.write(torn + b"\n")
        f.truncate(end)
        f.flush()
        os.fsync(f.fileno())
    return size - end


class SealedJournalFileBackend(JournalFileBackend):
    """``JournalFileBackend`` whose appends first cut a torn last line (module docstring)."""

    def __init__(self, file_path: str) -> None:
        self.path = Path(file_path)
        self.lock = JournalFileSymlinkLock(file_path)  # Optuna's default lock, same file
        super().__init__(file_path, lock_obj=self.lock)

    def append_logs(self, logs: Sequence[dict[str, Any]]) -> None:
        text = "\n".join(json.dumps(log, separators=(",", ":")) for log in logs) + "\n"
        self.lock.acquire()
        try:
            cut_torn_tail(self.path)
            with self.path.open("ab") as f:
                f.write(text.encode("utf-8"))
                f.flush()
                os.fsync(f.fileno())
        finally:
            self.lock.release()
