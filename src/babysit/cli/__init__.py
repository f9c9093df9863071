"""The ``babysit`` command line: each command parses, calls one Python function, renders.

Exit codes (docs/reliability.md): 0 success; 1 a check failed or a run diverged; 2 bad
input or a refusing environment (one line on stderr naming the file, key and reason;
nothing half-written); 3 an internal error (one line; the traceback goes to a file, or to
stderr with ``BABYSIT_DEBUG=1``); 130 interrupted. torch is imported only after the
config has been validated, so bad input is answered fast.

- ``_app.py``      the Typer app, the options every command shares, the guard, ``main``
- ``_runs.py``     train, demo, report
- ``_checks.py``   gradcheck, sanity, lr-find
- ``_search.py``   search, worker
- ``_ensemble.py`` ensemble

``COMMANDS`` registers them, in the order ``babysit --help`` lists them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from babysit.cli._app import app, main
from babysit.cli._checks import gradcheck, lr_find, sanity
from babysit.cli._ensemble import ensemble
from babysit.cli._runs import demo, report, train
from babysit.cli._search import search, worker

__all__ = ["COMMANDS", "app", "main"]

COMMANDS: tuple[tuple[str, Callable[..., Any]], ...] = (
    ("train", train),
    ("demo", demo),
    ("gradcheck", gradcheck),
    ("sanity", sanity),
    ("lr-find", lr_find),
    ("search", search),
    ("worker", worker),
    ("ensemble", ensemble),
    ("report", report),
)

for _name, _command in COMMANDS:
    app.command(_name)(_command)
