"""`babysit sanity` / `babysit gradcheck` and the trainer's pre-training gates."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from babysit.cli import app
from babysit.training.run import train

runner = CliRunner()


def test_sanity_cli_passes_a_bundled_task() -> None:
    result = runner.invoke(app, ["sanity", "--task", "digits-mlp"])
    assert result.exit_code == 0, result.output
    for name in ("chance_loss", "reg_raises_loss", "overfit_small"):
        assert name in result.output


def test_sanity_cli_exits_1_on_a_planted_bad_init() -> None:
    result = runner.invoke(
        app,
        [
            "sanity",
            "--task",
            "digits-mlp",
            "--set",
            "model.init=normal",
            "--set",
            "model.init_std=1.0",
        ],
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


BUGGY_TASK = """
import torch
from torch import nn
import babysit


class DoubledLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, b):
        ctx.save_for_backward(x, w)
        return x @ w.t() + b

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        return g @ w, 2 * g.t() @ x, g.sum(0)  # the weight gradient is doubled: a planted bug


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.hidden = nn.Linear(4, 8)
        self.w = nn.Parameter(torch.randn(3, 8) * 0.1)
        self.b = nn.Parameter(torch.zeros(3))

    def forward(self, x):
        return DoubledLinear.apply(torch.tanh(self.hidden(x)), self.w, self.b)


@babysit.task
def make():
    x = torch.randn(32, 4)
    y = torch.randint(0, 3, (32,))
    return babysit.Task(model_factory=lambda cfg: Net(), train=(x, y), val=(x, y),
                        loss_fn=nn.functional.cross_entropy, num_classes=3)
"""


def test_gradcheck_cli_passes_bundled_and_fails_a_planted_bug(tmp_path: Path) -> None:
    result = runner.invoke(app, ["gradcheck", "--task", "digits-mlp"])
    assert result.exit_code == 0, result.output
    assert "fc1.weight" in result.output and "thresholds" in result.output
    (tmp_path / "buggy.py").write_text(BUGGY_TASK)
    result = runner.invoke(app, ["gradcheck", "--task", f"{tmp_path / 'buggy.py'}:make"])
    assert result.exit_code == 1, result.output
    assert "FAILED: w (data)" in result.output or "FAILED: w (total)" in result.output
    failing = [ln for ln in result.output.splitlines() if "│ fail" in ln]
    assert failing and all("│ w " in ln for ln in failing)  # localised to the planted tensor


def test_train_gradcheck_gate_writes_its_report(tmp_path: Path) -> None:
    cfg = {"model": {"hidden": [16]}, "train": {"epochs": 1, "gradcheck": True, "report": False}}
    run = train(cfg, out=tmp_path / "r", quiet=True)
    assert run.failed_check is None
    saved = json.loads((tmp_path / "r" / "gradcheck.json").read_text())
    assert saved["passed"] is True and {p["name"] for p in saved["params"]} >= {"fc1.weight"}


def test_gradcheck_table_and_flags_reach_the_check(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[gradcheck]\ndatapoints = 3\nwrt = "inputs"\nh = "auto"\n')
    result = runner.invoke(app, ["gradcheck", str(config)])
    assert result.exit_code == 0, result.output
    assert "│ inputs " in result.output and "3x64" in result.output  # 3 samples of 64 pixels
    # flags override the table: --datapoints, --wrt, --h, --burn-in-steps
    result = runner.invoke(
        app, ["gradcheck", str(config), "--datapoints", "2", "--wrt", "params", "--h", "1e-6",
              "--burn-in-steps", "2"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "samples: 2 of" in result.output and "fc1.weight" in result.output
    assert "burn-in: 2 Adam steps" in result.output


def test_gradcheck_table_bad_values_are_one_line_exit_2() -> None:
    for bad in ("gradcheck.datapoints=0", "gradcheck.h=1", "gradcheck.wrt=labels",
                "gradcheck.coords=3"):  # fmt: skip
        result = runner.invoke(app, ["gradcheck", "--task", "digits-mlp", "--set", bad])
        assert result.exit_code == 2, result.output
        assert len(result.output.strip().splitlines()) == 1 and bad.split("=")[0] in result.output


def test_train_gradcheck_gate_reads_the_table(tmp_path: Path) -> None:
    cfg = {
        "model": {"hidden": [16]},
        "train": {"epochs": 1, "gradcheck": True, "report": False},
        "gradcheck": {"datapoints": 2, "coords_per_param": 3},
    }
    train(cfg, out=tmp_path / "r", quiet=True)
    saved = json.loads((tmp_path / "r" / "gradcheck.json").read_text())
    assert saved["thresholds"]["datapoints"] == 2 and saved["thresholds"]["coords_per_param"] == 3
    written = (tmp_path / "r" / "config.toml").read_text()
    assert "[gradcheck]" in written and "datapoints = 2" in written


NAN_TASK = """
import torch
from torch import nn
import babysit

@babysit.task
def make():
    x = torch.randn(16, 4)
    x[9, 1] = float("nan")
    y = torch.randint(0, 3, (16,))
    return babysit.Task(model_factory=lambda cfg: nn.Linear(4, 3), train=(x, y), val=(x, y),
                        loss_fn=nn.functional.cross_entropy, num_classes=3)
"""


def test_gradcheck_cli_refuses_nan_inputs_in_one_line(tmp_path: Path) -> None:
    # Once: exit 0 with every row "ok" (analytic=nan numeric=nan).
    (tmp_path / "nan.py").write_text(NAN_TASK)
    task = f"{tmp_path / 'nan.py'}:make"
    result = runner.invoke(app, ["gradcheck", "--task", task, "--datapoints", "16"])
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines() == [
        "babysit: error: gradcheck: the inputs hold 1 non-finite values (nan/inf); fix: clean "
        "or impute the data (gradients of NaN cannot be checked)"
    ]


def test_task_option_keeps_quotes_and_backslashes_in_a_path() -> None:
    result = runner.invoke(app, ["sanity", "--task", 'we"ird\\dir.py:make'])
    assert result.exit_code == 2
    assert 'file we"ird\\dir.py not found' in result.output
