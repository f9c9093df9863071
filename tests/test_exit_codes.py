"""Exit codes: a crash is not a divergence. Issue 13, defect 11.

0 success, 1 a run diverged or a check failed, 2 bad input or a refusing environment
(one line), 3 an internal error (one line; the traceback in a file, or on stderr with
BABYSIT_DEBUG=1), 130 interrupted. Before the fix every crash exited 1 with a traceback.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from babysit.cli import app

runner = CliRunner()
ROOT = Path(__file__).parents[1]

GOOD = '[task]\nname = "digits-mlp"\n[model]\nhidden = [16]\n[train]\nepochs = 1\nreport = false\n'


def _raiser(exc: BaseException) -> Callable[..., Any]:
    """A function that raises ``exc`` from babysit's own source (so the fault is babysit's
    bug, not "your code": the CLI names a user's frame as the user's, exit 2)."""
    import babysit

    where = str(Path(babysit.__file__).parent / "_injected_fault.py")
    namespace: dict[str, Any] = {}
    exec(
        compile("def boom(*args, **kwargs):\n    raise exc\n", where, "exec"),
        {"exc": exc},
        namespace,
    )
    return namespace["boom"]  # type: ignore[no-any-return]


# (command, the function it calls that fails, the exception, exit code, the one line's start)
FAULTS = [
    ("train", "babysit.training.run.train", ZeroDivisionError("division by zero"), 3,
     "babysit: internal error: ZeroDivisionError: division by zero"),
    ("train", "babysit.training.run.train", AssertionError(), 3,
     "babysit: internal error: AssertionError"),
    ("sanity", "babysit.tasks.task_for", KeyError("conv1"), 3,
     "babysit: internal error: KeyError: 'conv1'"),
    ("report", "babysit.report.html.write_report", RuntimeError("a\nb"), 3,
     "babysit: internal error: RuntimeError: a"),
    ("report", "babysit.report.html.write_report",
     PermissionError(13, "Permission denied", "/runs/x/report.html"), 2,
     "babysit: error: /runs/x/report.html: Permission denied"),
    ("train", "babysit.training.run.train", OSError(28, "No space left on device"), 2,
     "babysit: error: No space left on device"),
    ("train", "babysit.training.run.train", KeyboardInterrupt(), 130,
     "babysit: error: interrupted"),
]  # fmt: skip


def _args(command: str, tmp_path: Path) -> list[str]:
    config = tmp_path / "c.toml"
    config.write_text(GOOD)
    return {
        "train": ["train", str(config), "--out", str(tmp_path / "run"), "--quiet"],
        "sanity": ["sanity", str(config)],
        "report": ["report", str(tmp_path)],
    }[command]


@pytest.mark.parametrize(("command", "target", "exc", "code", "line"), FAULTS)
def test_each_fault_exits_with_its_own_code_and_one_line(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    command: str,
    target: str,
    exc: BaseException,
    code: int,
    line: str,
) -> None:
    monkeypatch.setattr(target, _raiser(exc))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.delenv("BABYSIT_DEBUG", raising=False)
    result = runner.invoke(app, _args(command, tmp_path))
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(line), lines
    assert "Traceback" not in result.output
    saved = list((tmp_path / "tmp").glob("babysit-traceback-*.txt"))
    if code == 3:
        assert [str(saved[0])] == re.findall(r"the traceback is in (\S+);", lines[0])
        text = saved[0].read_text()
        assert text.startswith("Traceback") and type(exc).__name__ in text
    else:
        assert not saved


def test_babysit_debug_prints_the_traceback_instead(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("babysit.training.run.train", _raiser(ZeroDivisionError("x")))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setenv("BABYSIT_DEBUG", "1")
    result = runner.invoke(app, _args("train", tmp_path))
    assert result.exit_code == 3
    assert result.stderr.startswith("Traceback") and "ZeroDivisionError: x" in result.stderr
    assert result.stderr.strip().splitlines()[-1].endswith("(the traceback is printed above)")
    assert not list((tmp_path / "tmp").iterdir())


_CRASH_OUTSIDE_A_GUARD = """
import sys
import babysit.cli as cli
import babysit.cli._runs as runs
def boom(run):
    raise TypeError("rendering failed")
runs._failure = boom  # runs after the command's guard, in the console script
sys.argv = ["babysit", "train", sys.argv[1], "--out", sys.argv[2], "--quiet"]
cli.main()
"""


def test_a_crash_in_the_console_script_exits_3_with_one_line(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(GOOD)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "TMPDIR": str(tmp_path)}
    env.pop("BABYSIT_DEBUG", None)
    done = subprocess.run(
        [sys.executable, "-c", _CRASH_OUTSIDE_A_GUARD, str(config), str(tmp_path / "run")],
        capture_output=True,
        text=True,
        env=env,
    )
    assert done.returncode == 3, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("babysit: internal error: TypeError: rendering failed"), lines
    assert list(tmp_path.glob("babysit-traceback-*.txt"))


@pytest.mark.parametrize("doc", ["README.md", "docs/reliability.md"])
def test_the_exit_codes_are_documented(doc: str) -> None:
    text = (ROOT / doc).read_text(encoding="utf-8")
    for code, meaning in (("0", "success"), ("1", "diverged"), ("2", "bad input"),
                          ("3", "internal error"), ("130", "interrupted")):  # fmt: skip
        assert re.search(rf"\b{code}\b[^\n]*{meaning}", text, re.IGNORECASE), (doc, code)
