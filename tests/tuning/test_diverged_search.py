"""Diverged trials: a NaN/inf loss stops a trial within its epoch and marks it diverged;
a search where every trial diverges still exits 0, its summary.json says so, and the CLI
says what to change (the lr range)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from babysit.cli import app
from babysit.tuning.summary import advice_for

CONFIG = """
[task]
name = "digits-mlp"
[model]
hidden = [16]
[optim]
rule = "sgd"
[train]
batch_size = 64
report = {report}
[search]
seed = 2
[search.space]
"optim.lr" = "loguniform(1e3, 1e6)"
"train.reg" = "loguniform(1e-5, 1e-3)"
[[search.stage]]
epochs = 2
trials = 4
executor = "{executor}"
[[search.stage]]
epochs = 1
trials = 2
executor = "{executor}"
"""


@pytest.mark.parametrize(("executor", "report"), [("trainer", "true"), ("population", "false")])
def test_a_search_where_every_trial_diverges_exits_0_and_says_to_lower_the_lr(
    tmp_path: Path, executor: str, report: str
) -> None:
    config, out = tmp_path / "search.toml", tmp_path / "study"
    config.write_text(CONFIG.format(executor=executor, report=report))
    result = CliRunner().invoke(app, ["search", str(config), "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    advice = (
        'babysit: every trial diverged: lower the upper bound of search.space "optim.lr" '
        "(searched loguniform(1000.0, 1000000.0))"
    )
    assert result.output.splitlines()[:2] == ["babysit: no trial completed", advice]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["advice"] == [advice.removeprefix("babysit: ")]
    assert summary["best"] == {"params": None, "value": None, "trial": None}
    assert [s["counts"] for s in summary["stages"]] == [{"diverged": 4}, {"diverged": 2}]
    assert [t["state"] for t in summary["trials"]] == ["diverged"] * 6
    assert (out / "report.html").is_file() == (report == "true")
    for trial in summary["trials"]:  # stopped within its first epoch, at the step it blew up
        records = [
            json.loads(line)
            for line in (out / trial["dir"] / "metrics.jsonl").read_text().splitlines()
        ]
        assert not [r for r in records if r["kind"] == "epoch"]  # no epoch ended
        steps = [r["step"] for r in records if r["kind"] == "batch"]
        assert steps and max(steps) < 1797 * 0.7 / 64  # fewer steps than one epoch has
        assert not list((out / trial["dir"]).glob("checkpoints/*.pt"))


def test_the_advice_needs_every_ended_trial_diverged() -> None:
    stages = [{"ranges": {"optim.lr": "loguniform(0.1, 10.0)"}}]
    diverged, lost = {"state": "diverged"}, {"state": "lost"}
    assert advice_for([diverged, lost, diverged], stages) == [
        'every trial diverged: lower the upper bound of search.space "optim.lr" '
        "(searched loguniform(0.1, 10.0))"
    ]
    assert advice_for([diverged, {"state": "complete"}], stages) == []
    assert advice_for([diverged, {"state": "pruned"}], stages) == []
    assert advice_for([], stages) == []
    fixed_lr = advice_for([diverged], [{"ranges": {"train.reg": "loguniform(0.1, 1.0)"}}])
    assert len(fixed_lr) == 1 and "lower optim.lr" in fixed_lr[0]
