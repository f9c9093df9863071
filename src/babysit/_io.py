"""Atomic file writes and the one convention for NaN/inf in JSON.

Writes: a temp file in the same directory, fsync, then rename. Readers see the old file
or the new one, never half of one; a write that fails leaves no temp file behind. The
file gets the mode a plain ``open()`` would give (0o666 less the umask), not the temp
file's 0o600, so a teammate on a shared machine can read a run.

A temp file is named ``.<name>.<pid>-<random>.tmp``: a writer killed mid-write (SIGKILL)
leaves one behind, and :func:`sweep_stale_temps` removes those whose writer is dead. A
failed write's OSError names the file it was writing (``exc.filename``), so a caller can
say "no space left on ... writing FILE".

JSON has no NaN or infinity: every file babysit writes stores them as the strings
``"nan"``, ``"inf"``, ``"-inf"`` (:func:`json_safe`), and :func:`json_restore` reads them
back as floats. A JSON file babysit reads (a run dir may come from anywhere) is untrusted:
:func:`loads_json` caps its nesting at :data:`MAX_JSON_DEPTH` levels and
:func:`read_json_file` its size at :data:`MAX_JSON_BYTES`.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = [
    "MAX_JSON_BYTES",
    "MAX_JSON_DEPTH",
    "atomic_open",
    "is_disk_full",
    "json_depth",
    "json_restore",
    "json_safe",
    "loads_json",
    "read_json_file",
    "sweep_stale_temps",
    "write_bytes_atomic",
    "write_json_atomic",
    "write_text_atomic",
]

_UMASK_LOCK = threading.Lock()
_NON_FINITE = ("nan", "inf", "-inf")
MAX_JSON_DEPTH = 64  # babysit's own files nest 5 deep at most (a histogram probe record)
MAX_JSON_BYTES = 256 * 2**20  # a JSON file read whole (findings.json, summary.json, ...)
_TEMP = re.compile(r"^\..+\.(\d+)-[A-Za-z0-9_]+\.tmp$")  # .<name>.<pid>-<random>.tmp
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')  # a JSON string (brackets inside are text)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


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
    """Open a temp file beside ``path`` ("w" or "wb"); on success fsync it and rename it.

    An OSError raised while writing (ENOSPC from a write or the fsync) gets ``path`` as
    its ``filename`` when it has none, so the caller can name the file.
    """
    path = Path(path)
    prefix = f".{path.name}.{os.getpid()}-"
    try:
        fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=path.parent)
    except OSError as exc:  # a read-only or missing dir: name the file meant, not the temp
        exc.filename = str(path)
        raise
    try:
        encoding = None if "b" in mode else "utf-8"
        with os.fdopen(fd, mode, encoding=encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp made it 0o600
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename is None:
            exc.filename = str(path)
        raise


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def sweep_stale_temps(directory: str | os.PathLike[str]) -> list[Path]:
    """Remove the temp files of :func:`atomic_open` in ``directory`` whose writer is dead.

    A writer killed mid-write (SIGKILL, power loss) leaves ``.<name>.<pid>-<random>.tmp``;
    a live writer's temp file (another process's, or this one's) is left alone.
    """
    removed: list[Path] = []
    d = Path(directory)
    if not d.is_dir():
        return removed
    for path in d.iterdir():
        m = _TEMP.match(path.name)
        if m and int(m.group(1)) != os.getpid() and not _alive(int(m.group(1))):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` says the file system is full (ENOSPC) or the user's quota is (EDQUOT)."""
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    with atomic_open(path, "w") as f:
        f.write(text)
    return Path(path)


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    with atomic_open(path, "wb") as f:
        f.write(data)
    return Path(path)


def json_depth(text: str) -> int:
    """How deep the arrays and objects of the JSON ``text`` nest (0 for a scalar).

    Brackets inside strings do not count; linear in the length of the text.
    """
    depth = deepest = 0
    for c in _NOT_BRACKET.sub("", _STRING.sub("", text)):
        depth += 1 if c in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def loads_json(text: str | bytes) -> Any:
    """Parse untrusted JSON: nesting capped at :data:`MAX_JSON_DEPTH`, NaN/inf strings restored.

    Raises ValueError (``json.JSONDecodeError`` is one) with the reason.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8")  # UnicodeDecodeError is a ValueError too
    # few brackets cannot nest deep: two str.count calls spare the scan of most texts
    few = text.count("[") + text.count("{") <= MAX_JSON_DEPTH
    if not few and json_depth(text) > MAX_JSON_DEPTH:
        raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels")
    return json_restore(json.loads(text))


def read_json_file(path: str | os.PathLike[str]) -> Any:
    """Read an untrusted JSON file (at most :data:`MAX_JSON_BYTES`) with :func:`loads_json`.

    Raises OSError when it cannot be read, ValueError when it is too large or malformed.
    """
    with open(path, "rb") as f:
        data = f.read(MAX_JSON_BYTES + 1)
    if len(data) > MAX_JSON_BYTES:
        raise ValueError(f"larger than {MAX_JSON_BYTES // 2**20} MiB")
    return loads_json(data)


def write_json_atomic(path: str | os.PathLike[str], data: Any) -> Path:
    """Write ``data`` as indented JSON, NaN/inf as strings (:func:`json_safe`)."""
    text = json.dumps(json_safe(data), indent=2, default=_number, allow_nan=False)
    return write_text_atomic(path, text + "\n")
