"""How much memory is left, and one line for an allocation that cannot be made.

A model or data set asked for in a config is sized before it is allocated (models.py builds
a bundled model on the meta device first; data.py counts a generated data set's bytes), so
a ``hidden = [10**9]`` answers with how much was asked instead of an allocator traceback or
the kernel's OOM killer. Allocations sized nowhere else (a user's model factory) are caught
where they fail: :func:`allocation_message` turns numpy's MemoryError, torch's CPU allocator
error and CUDA's out-of-memory error into one line that keeps the size asked for.

This module does not import torch.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from babysit.errors import BabysitError, ConfigError

__all__ = ["allocation_message", "available_bytes", "check_fits", "format_bytes"]

_UNITS = ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")
_TORCH_CPU = re.compile(r"you tried to allocate (\d+) bytes")


def format_bytes(n: float) -> str:
    """``7.3 TiB``: powers of 1024, three significant figures."""
    value, unit = float(n), 0
    while value >= 1024 and unit < len(_UNITS) - 1:
        value, unit = value / 1024, unit + 1
    return f"{int(value)} bytes" if unit == 0 else f"{value:.3g} {_UNITS[unit]}"


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024  # the file says kB: KiB
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cgroup_headroom() -> int | None:
    """memory.max - memory.current of this process's cgroup (v2), when it sets a limit."""
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = Path("/sys/fs/cgroup/memory.current").read_text().strip()
        return None if limit == "max" else max(int(limit) - int(used), 0)
    except (OSError, ValueError):
        return None


def available_bytes() -> int | None:
    """Bytes of memory a new allocation can still get: MemAvailable, capped by the cgroup
    limit; from sysconf where /proc is missing; None when nothing says."""
    found = [n for n in (_meminfo_available(), _cgroup_headroom()) if n is not None]
    if not found:
        try:
            found = [os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")]
        except (OSError, ValueError, AttributeError):
            return None
    return min(found)


def check_fits(
    what: str, nbytes: int, *, fix: str, error: type[BabysitError] = ConfigError
) -> None:
    """Raise ``error`` naming ``what`` and both sizes when ``nbytes`` exceeds what is left.

    The check is made before allocating: an allocation larger than the memory left either
    fails with a traceback or, on Linux's overcommit, succeeds and is later OOM-killed.
    """
    left = available_bytes()
    if left is not None and nbytes > left:
        raise error(
            f"{what} asks for {format_bytes(nbytes)} of memory, more than the "
            f"{format_bytes(left)} available; fix: {fix}"
        )


def allocation_message(exc: BaseException) -> str | None:
    """One line for an allocation that failed (keeping how much was asked), else None."""
    text = " ".join(str(exc).split())
    if isinstance(exc, MemoryError):  # numpy: "Unable to allocate 7.28 TiB for an array ..."
        return text or "out of memory (MemoryError)"
    cpu = _TORCH_CPU.search(text)
    if cpu is not None:
        return f"torch could not allocate {format_bytes(int(cpu.group(1)))} of memory"
    if type(exc).__name__ == "OutOfMemoryError" or text.startswith("CUDA out of memory"):
        return text.split(". GPU")[0]  # "CUDA out of memory. Tried to allocate 2.00 GiB"
    return None
