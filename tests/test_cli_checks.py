"""`babysit sanity` / `babysit gradcheck` and the trainer's pre-training gates."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from babysit.cli import app
from babysit.training.trainer import train

runner = CliRunner()


def test_sanity_cli_passes_a_bundled_task() -> None:
    result = runner.invoke(app, ["sanity", "--task", "digits-mlp"])
    assert result.exit_code == 0, result.output
    for name in ("chance_loss", "reg_raises_loss", "overfit_small"):
        assert name in result.output


def test_sanity_cli_exits_1_on_a_planted_bad_init() -> None:
    result = runner.invoke(
        app,
        ["sanity", "--task", "digits-mlp", "--set", "model.init=normal", "--set",
         "model.init_std=1.0"],
    )
    assert result.exit_code == 1, result.output
    assert "FAILED" in result.output


def test_sanity_cli_needs_config_or_task() -> None:
    result = runner.invoke(app, ["sanity"])
    assert result.exit_code == 2 and "--task" in result.output


def test_train_sanity_gate_stops_a_bad_run(tmp_path: Path) -> None:
    cfg = {
        "model": {"init": "normal", "init_std": 1.0},
        "train": {"epochs": 2, "sanity": True, "report": False},
    }
    run = train(cfg, out=tmp_path / "r", quiet=True)
    assert run.failed_check == "sanity"
    assert not any(r["kind"] == "epoch" for r in run.metrics)  # training never started
    saved = json.loads((tmp_path / "r" / "sanity.json").read_text())
    assert saved["passed"] is False


def test_train_sanity_gate_lets_a_good_run_through(tmp_path: Path) -> None:
    cfg = {"model": {"hidden": [32]}, "train": {"epochs": 1, "sanity": True, "report": False}}
    run = train(cfg, out=tmp_path / "r", quiet=True)
    assert run.failed_check is None and run.best
    assert json.loads((tmp_path / "r" / "sanity.json").read_text())["passed"] is True


def test_report_cli_writes_the_page_and_refuses_a_non_run(tmp_path: Path) -> None:
    run = train(
        {"model": {"hidden": [16]}, "train": {"epochs": 1, "report": False}},
        out=tmp_path / "r",
        quiet=True,
    )
    assert not (run.dir / "report.html").exists()
    result = runner.invoke(app, ["report", str(run.dir)])
    assert result.exit_code == 0, result.output
    assert (run.dir / "report.html").stat().st_size > 10_000
    empty = tmp_path / "empty"
    empty.mkdir()
    result = runner.invoke(app, ["report", str(empty)])
    assert result.exit_code == 2 and "metrics.jsonl" in result.output
    assert list(empty.iterdir()) == []
