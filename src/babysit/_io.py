"""Atomic file writes and the one convention for NaN/inf in JSON.

Writes: a temp file in the same directory, fsync, then rename. Readers see the old file
or the new one, never half of one; a write that fails leaves no temp file behind. The
file gets the mode a plain ``open()`` would give (0o666 less the umask), not the temp
file's 0o600, so a teammate on a shared machine can read a run.

JSON has no NaN or infinity: every file babysit writes stores them as the strings
``"nan"``, ``"inf"``, ``"-inf"`` (:func:`json_safe`), and :func:`json_restore` reads them
back as floats.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = [
    "atomic_open",
    "json_restore",
    "json_safe",
    "write_bytes_atomic",
    "write_json_atomic",
    "write_text_atomic",
]

_UMASK_LOCK = threading.Lock()
_NON_FINITE = ("nan", "inf", "-inf")


def json_safe(value: Any) -> Any:
    """NaN/inf as the strings "nan", "inf", "-inf", recursively (tuples become lists)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def json_restore(value: Any) -> Any:
    """The inverse of :func:`json_safe`: "nan", "inf", "-inf" back to floats, recursively."""
    if isinstance(value, str) and value in _NON_FINITE:
        return float(value)
    if isinstance(value, dict):
        return {k: json_restore(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_restore(v) for v in value]
    return value


def _number(value: Any) -> Any:
    """json.dumps fallback: a tensor or numpy scalar as a float (NaN/inf as strings)."""
    return json_safe(float(value))


def _umask() -> int:
    """The process umask (read by setting and restoring it; a lock keeps threads apart)."""
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


@contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temp file beside ``path`` ("w" or "wb"); on success fsync it and rename it."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        encoding = None if "b" in mode else "utf-8"
        with os.fdopen(fd, mode, encoding=encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp made it 0o600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    with atomic_open(path, "w") as f:
        f.write(text)
    return Path(path)


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    with atomic_open(path, "wb") as f:
        f.write(data)
    return Path(path)


def write_json_atomic(path: str | os.PathLike[str], data: Any) -> Path:
    """Write ``data`` as indented JSON, NaN/inf as strings (:func:`json_safe`)."""
    text = json.dumps(json_safe(data), indent=2, default=_number, allow_nan=False)
    return write_text_atomic(path, text + "\n")
