"""The command line's one-line answers: usage errors, and what counts as bad input.

Click's usage errors (an unknown option, ``--steps x``) print a multi-line box; here they
are one line and exit 2, like every other bad input. :func:`bad_input_line` says which
exceptions are bad input, answered in one line with exit 2: babysit's own
:class:`~babysit.errors.BabysitError`, an allocation larger than the machine has (with how
much was asked), and the user's own code failing (with where; ``--debug`` prints the
traceback first). Anything else is babysit's fault and propagates.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, cast

import typer
from typer.core import TyperGroup

from babysit._memory import allocation_message
from babysit._usercode import user_code_error
from babysit.errors import BabysitError, UserCodeError

__all__ = ["OneLineGroup", "bad_input_line"]


def bad_input_line(exc: Exception, *, debug: bool = False) -> str | None:
    """The one line for an exception that is bad input, else None (``exc`` is a bug)."""
    if not isinstance(exc, BabysitError):
        memory = allocation_message(exc)
        if memory is not None:
            return f"out of memory: {memory}; fix: a smaller model, data set or batch"
        yours = user_code_error(exc, "")  # a model, loss or Dataset of the user's raised
        if yours is None:
            return None
        exc = yours
    if isinstance(exc, UserCodeError) and debug:
        typer.echo(exc.traceback, err=True, nl=False)
    return str(exc)


class OneLineGroup(TyperGroup):
    """Usage errors (an unknown option, a bad --steps) as one line and exit 2, not a box."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        run = (args, prog_name, complete_var, False, windows_expand_args)
        if not standalone_mode:
            return super().main(*run, **extra)
        try:
            code = super().main(*run, **extra)
        except typer.Abort:
            typer.echo("babysit: aborted", err=True)
            sys.exit(1)
        except typer.TyperException as exc:  # click's ClickException: UsageError, BadParameter
            if type(exc).__name__ == "NoArgsIsHelpError":  # bare `babysit`: the help
                cast(Any, exc).show()
                sys.exit(exc.exit_code)
            ctx = getattr(exc, "ctx", None)
            path = ctx.command_path if ctx is not None else "babysit"
            root = ctx.find_root().command_path if ctx is not None else path
            command = path.removeprefix(root).strip()  # "train" (the root may be python -m ...)
            message = f"{command + ': ' if command else ''}{exc.format_message()}"
            typer.echo(f"babysit: error: {' '.join(message.split())} (see {path} --help)", err=True)
            sys.exit(exc.exit_code)
        sys.exit(code if isinstance(code, int) else 0)
