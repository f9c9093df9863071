"""``babysit ensemble`` and ``babysit report`` on an ensemble dir, end to end on tiny runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import babysit
from babysit.cli import app

from .runs import make_runs

runner = CliRunner()

SEEDS_CONFIG = """
[task]
name = "digits-mlp"
[model]
hidden = [8]
[optim]
lr = 1e-2
[train]
epochs = 1
batch_size = 64
report = false
"""
STUDENT = SEEDS_CONFIG + "[distill]\ntemperature = 3.0\nalpha = 0.7\n"


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return make_runs(tmp_path_factory.mktemp("runs"), ["a", "b"], keep_last=2)


def test_members_from_a_run_and_a_file_then_the_report_command(
    runs: list[Path], tmp_path: Path
) -> None:
    out = tmp_path / "ens"
    result = runner.invoke(
        app,
        [
            "ensemble",
            str(runs[0]),
            "--from-run",
            str(runs[1]),
            "--checkpoints",
            "2",
            "--pick",
            "last",
            "--out",
            str(out),
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "ensemble of 3 (probs)" in result.output
    assert f"ensemble dir: {out}" in result.output and "report:" in result.output
    data = json.loads((out / "ensemble.json").read_text())
    assert [m["source"] for m in data["members"]] == ["run", "run", "member"]
    (out / "report.html").unlink()
    again = runner.invoke(app, ["report", str(out)])
    assert again.exit_code == 0, again.output
    page = (out / "report.html").read_text()
    assert "babysit ensemble" in page and 'id="members"' in page


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--from-run", "{run}", "--checkpoints", "5"], "holds 2 checkpoint(s)"),
        (["--from-run", "{run}", "--checkpoints", "0"], "give a whole number of members >= 1"),
        (["--from-run", "{run}"], "--from-run DIR needs --checkpoints K"),
        (["--from-study", "{run}", "--top", "2"], "not a study dir"),
        (["{run}/nothing.pt"], "no such checkpoint file or run dir"),
        (["--seeds", "2"], "--seeds N needs one CONFIG"),
        (["{cfg}"], "a CONFIG is trained only with --seeds N"),
        (["{run}", "--average", "mode"], "unknown average 'mode'"),
        (["{run}", "--device", "tpu"], "--device 'tpu': use cpu or cuda"),
        (["{run}", "--distill", "{run}/none.toml"], "config file not found"),
        ([], "no members"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(
    runs: list[Path], tmp_path: Path, args: list[str], needle: str
) -> None:
    cfg = tmp_path / "seeds.toml"
    cfg.write_text(SEEDS_CONFIG)
    out = tmp_path / "ens"
    argv = [a.format(run=runs[0], cfg=cfg) for a in args]
    result = runner.invoke(app, ["ensemble", *argv, "--out", str(out), "--quiet"])
    lines = [ln for ln in result.output.strip().splitlines() if ln.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0].startswith("babysit: error:") and needle in lines[0], lines[0]
    assert not out.exists()


@pytest.mark.slow
def test_seeds_with_a_distilled_student_from_the_console_script(tmp_path: Path) -> None:
    (tmp_path / "seeds.toml").write_text(SEEDS_CONFIG)
    (tmp_path / "student.toml").write_text(STUDENT)
    src = str(Path(babysit.__file__).resolve().parents[1])  # this checkout's babysit
    env = {**os.environ, "PYTHONPATH": src}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "babysit",
            "ensemble",
            "--seeds",
            "3",
            "seeds.toml",
            "--distill",
            "student.toml",
            "--out",
            "ens",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert "seeds: training 3 seeds of digits-mlp at once" in result.stderr  # progress
    assert "distilled student (students/distilled)" in result.stdout
    assert "distillation: T = 3, alpha = 0.7" in result.stdout
    page = (tmp_path / "ens" / "report.html").read_text()
    assert "student on labels only" in page and "T = 3, alpha = 0.7" in page
