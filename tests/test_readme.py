"""The README's examples run: every ```python block, and every ```console line starting with $."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)


def _blocks(lang: str) -> list[str]:
    return [body for kind, body in FENCE.findall(README.read_text()) if kind == lang]


def test_readme_starts_with_the_two_commands() -> None:
    head = README.read_text()[:1500]
    assert "make demo" in head and "make test" in head


@pytest.mark.slow
def test_python_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = _blocks("python")
    assert blocks, "the README has no python examples"
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "__readme__"}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)


@pytest.mark.slow
def test_console_examples_run(tmp_path: Path) -> None:
    """Each ``$ babysit ...`` line runs with the exit code its block documents (0 by default)."""
    exe = str(Path(sys.executable).parent / "babysit")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    ran = 0
    for block in _blocks("console"):
        for line in block.splitlines():
            if not line.startswith("$ babysit"):
                continue
            words = shlex.split(line[2:])
            expect = 0
            if "#" in words:  # "$ babysit sanity ... # exit 1"
                comment = words[words.index("#") :]
                words = words[: words.index("#")]
                expect = int(comment[-1]) if comment[-2:-1] == ["exit"] else 0
            result = subprocess.run(
                [exe, *words[1:]], cwd=tmp_path, env=env, capture_output=True, text=True
            )
            assert result.returncode == expect, (line, result.stdout, result.stderr)
            ran += 1
    assert ran, "the README has no console examples"
