"""What a config may name as code: a declared task function, found without running it.

A config names a task function as ``"pkg.module:fn"`` or ``"path/to/file.py:fn"``. Importing
the module runs its top-level code, as running a script would (the README says so beside
resume); a module of Python's standard library is refused before that. The function is
called only when it declares itself a task: :func:`task` marks it, or its return annotation
is ``babysit.Task`` (a string annotation is looked up in the module, never evaluated).
This module does not import torch.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from babysit._usercode import wrap_user_call
from babysit.errors import TaskError

__all__ = ["declares_task", "describe", "import_function", "task"]

F = TypeVar("F", bound=Callable[..., Any])
_MARK = "__babysit_task__"


def task(fn: F) -> F:
    """Declare ``fn`` a task builder, so that a config may name it (``"pkg.module:fn"``).

    babysit calls a function a config names only when it declares itself a task, with this
    decorator or the return annotation ``-> babysit.Task``: a config.toml that came with a
    downloaded run dir cannot make babysit call ``os:system`` or any other function.
    """
    if not inspect.isfunction(fn):
        raise TypeError(f"@babysit.task decorates a function, not {type(fn).__name__}")
    setattr(fn, _MARK, True)
    return fn


def _annotated_task(fn: Any) -> bool:
    """Whether ``fn``'s return annotation is :class:`Task` (a string is looked up, not run)."""
    note = getattr(fn, "__annotations__", {}).get("return")
    if isinstance(note, str):  # ``from __future__ import annotations``: "babysit.Task", "Task"
        head, *rest = note.strip().split(".")
        note = fn.__globals__.get(head)
        for part in rest:
            if not inspect.ismodule(note):
                return False
            note = getattr(note, part, None)
    from babysit.tasks import Task  # tasks.py imports this module

    return note is Task


def declares_task(fn: Any) -> bool:
    """A plain function marked by :func:`task` or annotated ``-> babysit.Task``."""
    return inspect.isfunction(fn) and (vars(fn).get(_MARK) is True or _annotated_task(fn))


def describe(fn: Any) -> str:
    """``function make``, ``builtin function system``, ``class Task``: what a name resolved to."""
    if inspect.isclass(fn):
        return f"class {fn.__name__}"
    if inspect.isbuiltin(fn):
        return f"builtin function {fn.__name__}"
    if inspect.isfunction(fn):
        return f"function {fn.__name__}"
    return f"{type(fn).__name__} object"


def import_function(spec: str, *, what: str = "task") -> Callable[..., Any]:
    """Import ``fn`` from ``"pkg.module:fn"`` or ``"path/to/file.py:fn"``; cwd is importable.

    Importing runs the module's code, as running a script would; a module of Python's
    standard library is refused before that (no task or objective lives there: ``os:system``
    is a config trying to run a command). ``what`` names the thing in the one-line TaskError
    (a task, a search objective); the module's own failures are a UserCodeError.
    """
    import importlib
    import importlib.util
    import os
    from pathlib import Path

    target, _, attr = spec.rpartition(":")
    if not target or not attr:
        raise TaskError(f"{what} {spec!r}: expected 'pkg.module:function' or 'file.py:function'")
    top = target.partition(".")[0]
    if not target.endswith(".py") and top in sys.stdlib_module_names:
        raise TaskError(
            f"{what} {spec!r}: {top} is a module of Python's standard library, not your "
            f"{what}'s; babysit does not import it; fix: name a function in your own module"
        )
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        if target.endswith(".py"):
            path = Path(target)
            if not path.is_file():
                raise TaskError(f"{what} {spec!r}: file {target} not found")
            mod_spec = importlib.util.spec_from_file_location(f"_babysit_task_{path.stem}", path)
            if mod_spec is None or mod_spec.loader is None:
                raise TaskError(f"{what} {spec!r}: cannot load {target} as a Python module")
            module = importlib.util.module_from_spec(mod_spec)
            mod_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
    except TaskError:
        raise
    except ModuleNotFoundError as exc:
        if exc.name == target or target.startswith(f"{exc.name}."):  # the named one is missing
            raise TaskError(f"{what} {spec!r}: no module named {exc.name!r}") from None
        raise wrap_user_call(exc, f"{what} {spec!r}: importing {target}") from exc
    except (Exception, SystemExit) as exc:  # the user's module failed (or exited) on import
        raise wrap_user_call(exc, f"{what} {spec!r}: importing {target}") from exc
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise TaskError(f"{what} {spec!r}: {target} has no function {attr!r}")
    return fn
