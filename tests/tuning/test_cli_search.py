"""``babysit search`` and ``babysit worker``: bad input is one line, exit 2, nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from babysit.cli import app

runner = CliRunner()

CONFIG = """
[task]
name = "digits-mlp"
[model]
hidden = [16]
[search.space]
"optim.lr" = "{space}"
[[search.stage]]
epochs = 0.25
trials = {trials}
"""


def _config(tmp_path: Path, space: str = "loguniform(1e-3, 1e-1)", trials: int = 2) -> str:
    path = tmp_path / f"search-{abs(hash((space, trials)))}.toml"
    path.write_text(CONFIG.format(space=space, trials=trials))
    return str(path)


def _one_line_exit_2(*args: str) -> str:
    result = runner.invoke(app, list(args))
    lines = [ln for ln in result.output.strip().splitlines() if ln.strip()]
    assert result.exit_code == 2 and len(lines) == 1, (args, result.output)
    assert lines[0].startswith("babysit: error:"), result.output
    return lines[0]


@pytest.mark.parametrize(
    ("space", "trials", "args", "needle"),
    [
        ("loguniform(1e-6", 2, [], "expected a distribution"),
        ("uniform(0.1, 0.1)", 2, [], "must be below high"),
        ("loguniform(0, 1)", 2, [], "a log range needs low > 0"),
        ("loguniform(1e-6, 1)", 0, [], "search.stage.0.trials = 0"),
        ("loguniform(1e-6, 1)", 2, ["--workers", "0"], "at least one worker"),
        ("loguniform(1e-6, 1)", 2, ["--address", "auto"], "only --backend ray takes an"),
        ("loguniform(1e-6, 1)", 2, ["--backend", "slurm"], "unknown backend 'slurm'"),
        ("loguniform(1e-6, 1)", 2, ["--storage", "redis://x"], "unknown storage 'redis'"),
        ("loguniform(1e-6, 1)", 2, ["--set", "search.seed=-1"], "search.seed"),
    ],
)
def test_bad_search_input_exits_2_with_one_line_and_writes_nothing(
    tmp_path: Path, space: str, trials: int, args: list[str], needle: str
) -> None:
    out = tmp_path / "study"
    line = _one_line_exit_2("search", _config(tmp_path, space, trials), "--out", str(out), *args)
    assert needle in line
    assert not out.exists()


def test_a_key_that_is_not_a_config_key_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[search.space]\n"optim.learning_rate" = "loguniform(1e-6, 1)"\n')
    out = tmp_path / "study"
    assert "unknown config key" in _one_line_exit_2("search", str(config), "--out", str(out))
    assert not out.exists()


def test_resume_of_a_dir_without_a_study_exits_2(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    line = _one_line_exit_2(
        "search", _config(tmp_path), "--resume", "--out", str(tmp_path / "empty")
    )
    assert "holds no study" in line and not any((tmp_path / "empty").iterdir())
    assert "--out DIR" in _one_line_exit_2("search", "--resume")


def test_a_worker_on_a_dir_without_a_study_exits_2(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    line = _one_line_exit_2("worker", "--study", str(tmp_path / "empty"))
    assert "holds no study" in line and not any((tmp_path / "empty").iterdir())
    assert "--study DIR" in _one_line_exit_2("worker", "--storage", "sqlite:///x.db")


def test_search_prints_the_best_trial_and_a_worker_on_the_done_study_exits(tmp_path: Path) -> None:
    out = tmp_path / "study"
    result = runner.invoke(app, ["search", _config(tmp_path), "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "best: trial" in result.output and f"study dir: {out}" in result.output
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["trials"]) == 2
    result = runner.invoke(app, ["worker", "--study", str(out)])
    assert result.exit_code == 0 and "0 trial(s) run" in result.output
    resumed = runner.invoke(app, ["search", "--resume", "--out", str(out), "--quiet"])
    assert resumed.exit_code == 0, resumed.output
    assert json.loads((out / "summary.json").read_text())["trials"] == summary["trials"]
