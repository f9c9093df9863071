"""Telling the user's code from babysit's: where an exception was raised, in one line.

A task builder, the module it lives in, a model factory, a loss or a Dataset are the user's
code; when one of them raises (or calls ``sys.exit``) the answer is one line saying so, with
where (``module:function``, line) and the exception's type and message, and the traceback
kept for ``babysit --debug``. A frame is *library* code when its file lies in babysit's
package, the standard library or site-packages; any other file is the user's.
"""

from __future__ import annotations

import sysconfig
import traceback
from pathlib import Path
from types import TracebackType

from babysit.errors import UserCodeError

__all__ = ["describe_exception", "user_code_error", "user_frame", "wrap_user_call"]

_LONGEST = 400  # characters of an exception's message in the one line
_BABYSIT = Path(__file__).resolve().parent
_LIBRARY = tuple(
    {
        Path(p).resolve()
        for key in ("stdlib", "platstdlib", "purelib", "platlib")
        if (p := sysconfig.get_paths().get(key))
    }
)


def _is_library(filename: str) -> bool:
    if filename.startswith("<"):  # <frozen importlib._bootstrap>, <string>
        return True
    path = Path(filename).resolve()
    return path.is_relative_to(_BABYSIT) or any(path.is_relative_to(lib) for lib in _LIBRARY)


def user_frame(tb: TracebackType | None) -> traceback.FrameSummary | None:
    """The innermost frame of ``tb`` in the user's code (not babysit, stdlib, site-packages)."""
    frames = [f for f in traceback.extract_tb(tb) if not _is_library(f.filename)]
    return frames[-1] if frames else None


def _where(frame: traceback.FrameSummary, module: str | None) -> str:
    """``pkg.mod:helper, line 12`` (a module's name, or the file for a file-loaded task)."""
    path = Path(frame.filename)
    try:
        shown = str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        shown = str(path)
    name = module if module and not module.startswith("_babysit_task_") else shown
    return f"{name}:{frame.name}, line {frame.lineno}"


def _module_of(tb: TracebackType | None, frame: traceback.FrameSummary) -> str | None:
    """The ``__name__`` of the module whose code ``frame`` runs."""
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == frame.filename and tb.tb_lineno == frame.lineno:
            name = tb.tb_frame.f_globals.get("__name__")
            return name if isinstance(name, str) else None
        tb = tb.tb_next
    return None


def describe_exception(exc: BaseException) -> str:
    """``ZeroDivisionError: division by zero``; ``sys.exit(0)`` for a SystemExit."""
    if isinstance(exc, SystemExit):
        return f"called sys.exit({exc.code!r})"
    message = " ".join(str(exc).split())  # one line
    if len(message) > _LONGEST:
        message = message[:_LONGEST] + " ..."
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def user_code_error(exc: BaseException, what: str) -> UserCodeError | None:
    """A one-line UserCodeError when ``exc`` was raised in the user's code, else None.

    ``what`` is who ran the code, e.g. ``"task 'mymod:make'"`` (empty: no one to name).
    """
    frame = user_frame(exc.__traceback__)
    if frame is None:
        return None
    where = _where(frame, _module_of(exc.__traceback__, frame))
    return _error(exc, what, f" (in {where})")


def _error(exc: BaseException, what: str, where: str) -> UserCodeError:
    text = "".join(traceback.format_exception(exc))
    what = f"{what}: " if what else ""
    if isinstance(exc, SystemExit):  # a task module is not a script: exiting stops babysit
        return UserCodeError(
            f"{what}your code {describe_exception(exc)}{where}; a task's module and "
            "function must return, not exit",
            text,
        )
    return UserCodeError(
        f"{what}your code raised {describe_exception(exc)}{where}; "
        "rerun with babysit --debug for the traceback",
        text,
    )


def wrap_user_call(exc: BaseException, what: str) -> UserCodeError:
    """Like :func:`user_code_error`, for code known to be the user's (no user frame: say so)."""
    error = user_code_error(exc, what)
    return error if error is not None else _error(exc, what, "")
