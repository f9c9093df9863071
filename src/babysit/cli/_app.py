"""The command line's frame: the Typer app, the shared options, the guard, ``main``.

Exit codes (docs/reliability.md): 0 success; 1 a check failed or a run diverged; 2 bad
input or a refusing environment (one line on stderr naming the file, key and reason;
nothing half-written): a bad config, a damaged or locked run dir, a full disk, a file
that cannot be read or written; 3 an internal error (one line; the traceback goes to a
file, or to stderr with ``BABYSIT_DEBUG=1``); 130 interrupted. torch is imported only
after the config has been validated, so bad input is answered fast.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer

from babysit._cli_lines import OneLineGroup, bad_input_line
from babysit._crash import EXIT_INTERNAL, crash_line, debugging, set_debug
from babysit.config import Config, load_config
from babysit.errors import ConfigError

app = typer.Typer(
    name="babysit",
    help="Check the gradients, sanity-check the model, babysit the training of a PyTorch model.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=OneLineGroup,
)


@app.callback()
def _options(
    debug: Annotated[
        bool, typer.Option("--debug", help="On an error, also print its traceback.")
    ] = False,
) -> None:
    """Check the gradients, sanity-check the model, babysit the training of a PyTorch model."""
    set_debug(debug)  # the one switch with BABYSIT_DEBUG: babysit/_crash.py's debugging()


__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "ConfigArg",
    "DeviceOpt",
    "OutOpt",
    "QuietOpt",
    "SetOpt",
    "TaskOpt",
    "app",
    "crash",
    "fail",
    "guard",
    "main",
    "resolve_config",
]

T = TypeVar("T")

ConfigArg = Annotated[Path | None, typer.Argument(help="TOML config file.", show_default=False)]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a config value: KEY=VALUE (repeatable).", metavar="K=V"),
]
OutOpt = Annotated[Path | None, typer.Option("--out", help="Run directory to write.")]
TaskOpt = Annotated[str | None, typer.Option("--task", help="Task name instead of a config.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")]
DeviceOpt = Annotated[
    str | None, typer.Option("--device", help="cpu or cuda (default: cuda when available).")
]


EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 1, 2, 130  # EXIT_INTERNAL: 3


def fail(message: str, code: int = EXIT_BAD_INPUT) -> typer.Exit:
    one_line = " ".join(message.splitlines())  # a path or a user's message may hold newlines
    typer.echo(f"babysit: error: {one_line}", err=True)
    return typer.Exit(code)


def crash(exc: BaseException) -> typer.Exit:
    """An exception nobody expected: one line and exit 3; the traceback to a file."""
    typer.echo(f"babysit: {crash_line(exc)}", err=True)
    return typer.Exit(EXIT_INTERNAL)


def guard(fn: Callable[[], T]) -> T:
    """Run ``fn``; bad input becomes one line on stderr and exit code 2, a crash exit 3.

    Bad input includes the user's own code failing (a task, its model, its loss: the line
    says where; ``--debug`` adds the traceback), an allocation too large for this machine
    (the line says how much was asked) and a file that cannot be read or written.
    """
    try:
        return fn()
    except (typer.Exit, typer.Abort, typer.TyperException):  # already answered
        raise
    except KeyboardInterrupt:
        raise fail("interrupted", EXIT_INTERRUPTED) from None
    except Exception as exc:
        line = bad_input_line(exc, debug=debugging())
        if line is not None:
            raise fail(line) from None
        if isinstance(exc, OSError):  # the environment: a file that cannot be read or written
            where = f"{exc.filename}: " if exc.filename is not None else ""
            raise fail(f"{where}{exc.strerror or exc}") from None
        raise crash(exc) from None


def resolve_config(config: Path | None, task: str | None, sets: list[str] | None) -> Config:
    if config is None and task is None:
        raise ConfigError("give a CONFIG file or --task NAME")
    overrides = list(sets or [])
    if task is not None:
        overrides.insert(0, f"task.name={json.dumps(task)}")  # a TOML basic string
    return load_config(config, overrides)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except SystemExit as exc:
        sys.exit(exc.code)
    except KeyboardInterrupt:
        typer.echo("babysit: error: interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except Exception as exc:  # outside a command's guard (rendering a result): still one line
        sys.exit(crash(exc).exit_code)
