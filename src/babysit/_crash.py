"""An exception nobody expected (a bug): one line for the user, the traceback kept aside.

The command line answers a crash with exit code 3 and one line naming the exception and
where its traceback went: a file ``babysit-traceback-*.txt`` in the temp dir, or stderr
when ``BABYSIT_DEBUG`` is set (to anything but "0"). Exit code 1 stays what it means: a
run diverged or a check failed.
"""

from __future__ import annotations

import os
import sys
import tempfile
import traceback

__all__ = ["EXIT_INTERNAL", "crash_line", "debugging", "set_debug"]

EXIT_INTERNAL = 3


_FLAG = {"debug": False}  # babysit --debug, set for each command line


def set_debug(on: bool) -> None:
    """``babysit --debug``: tracebacks on stderr for this command (as BABYSIT_DEBUG=1)."""
    _FLAG["debug"] = on


def debugging() -> bool:
    """Whether ``--debug`` or ``BABYSIT_DEBUG`` asks for tracebacks on stderr."""
    return _FLAG["debug"] or os.environ.get("BABYSIT_DEBUG", "") not in ("", "0")


def crash_line(exc: BaseException) -> str:
    """``internal error: TYPE: first line (the traceback is in FILE; ...)``; keeps the traceback.

    The traceback is written to a new temp file, or to stderr when :func:`debugging`.
    """
    text = "".join(traceback.format_exception(exc))
    if debugging():
        sys.stderr.write(text)
        sys.stderr.flush()
        where = "printed above"
    else:
        try:
            fd, name = tempfile.mkstemp(prefix="babysit-traceback-", suffix=".txt")
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            where = f"in {name}; BABYSIT_DEBUG=1 prints it"
        except OSError as err:  # a full disk, say: the line still comes
            where = f"not saved ({err.strerror}); BABYSIT_DEBUG=1 prints it"
    lines = str(exc).strip().splitlines()
    what = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    return f"internal error: {what} (the traceback is {where})"
