"""LR range test: the sweep is log-uniform, stops when the loss blows up, suggests a usable lr."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from babysit.cli import app
from babysit.config import load_config
from babysit.errors import ConfigError
from babysit.tasks import get_task
from babysit.training.lr_find import lr_find, plot_lr_find
from babysit.training.run import train

CFG = {"task": {"name": "digits-mlp"}, "optim": {"rule": "sgd"}, "train": {"batch_size": 32}}


def test_sweep_is_geometric_and_stops_when_loss_blows_up() -> None:
    result = lr_find(get_task("digits-mlp"), load_config(CFG), steps=120)
    ratios = [b / a for a, b in zip(result.lrs, result.lrs[1:], strict=False)]
    assert max(ratios) == pytest.approx(min(ratios), rel=1e-9)  # log-uniform
    assert result.lrs[0] == pytest.approx(1e-7)
    assert result.stopped_early and result.lrs[-1] < 10.0  # sgd at lr ~10 explodes on digits
    assert result.suggestion == pytest.approx(result.lr_at_min / 10)
    i = result.lrs.index(result.lr_at_min)
    assert result.smoothed[i] == min(result.smoothed)


def test_suggested_lr_trains_well_and_the_minimum_is_too_hot(tmp_path: Path) -> None:
    """Oracle: training itself. The suggestion beats lr_min by far and does not diverge."""
    result = lr_find(get_task("digits-mlp"), load_config(CFG), steps=120)
    assert 1e-4 < result.suggestion < 1.0

    def val_acc(lr: float, name: str) -> float:
        cfg = {**CFG, "optim": {"rule": "sgd", "lr": lr}, "train": {"epochs": 3, "report": False}}
        run = train(cfg, out=tmp_path / name, quiet=True)
        return 0.0 if run.diverged else run.best["val_acc"]

    assert val_acc(result.suggestion, "suggested") > val_acc(1e-5, "tiny") + 0.3


def test_smoothing_is_bias_corrected() -> None:
    from babysit.training.lr_find import _smooth

    assert _smooth([3.0, 3.0, 3.0], 0.9) == pytest.approx([3.0, 3.0, 3.0])


def test_bad_ranges_are_errors() -> None:
    with pytest.raises(ConfigError, match="lr_min < lr_max"):
        lr_find(get_task("digits-mlp"), load_config(CFG), lr_min=1.0, lr_max=1e-3)
    with pytest.raises(ConfigError, match="steps"):
        lr_find(get_task("digits-mlp"), load_config(CFG), steps=2)


def test_cli_writes_plot_and_json(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[task]\nname = "digits-mlp"\n[optim]\nrule = "adam"\n')
    result = CliRunner().invoke(
        app, ["lr-find", str(cfg), "--out", str(tmp_path / "lr"), "--steps", "60"]
    )
    assert result.exit_code == 0, result.output
    assert "suggested optim.lr" in result.output
    assert (tmp_path / "lr" / "lr_find.png").stat().st_size > 1000
    assert (tmp_path / "lr" / "lr_find.json").is_file()
    assert math.isfinite(float(result.output.split("suggested optim.lr = ")[1].split()[0]))


def test_plot_without_suggestion_dir(tmp_path: Path) -> None:
    result = lr_find(get_task("spiral-mlp"), load_config({**CFG, "task": {"name": "spiral-mlp"}}))
    plot_lr_find(result, tmp_path / "x")
    assert (tmp_path / "x" / "lr_find.png").is_file()
