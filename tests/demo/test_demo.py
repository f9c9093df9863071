"""``babysit demo``: every step's files, the summary read back from them, bad input refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from babysit.cli import app
from babysit.config import load_config
from babysit.demo import DEMO_CONFIG, STEPS, recipe_config
from babysit.errors import ConfigError
from babysit.training.checkpoint import list_checkpoints

runner = CliRunner()


def _json(path: Path) -> Any:
    return json.loads(path.read_text())


def test_the_steps_are_the_notes_recipe_in_order() -> None:
    assert list(STEPS) == ["gradcheck", "sanity", "search", "train", "ensemble"]


def test_recipe_configs_load_and_fast_is_smaller() -> None:
    full, fast = recipe_config(), recipe_config(fast=True)
    assert full.task.name == "digits-convnet" and fast.task.name == full.task.name
    assert sum(s.trials for s in fast.search.stage) < sum(s.trials for s in full.search.stage)
    assert fast.train.epochs < full.train.epochs
    assert list(full.search.space) == ["optim.lr", "train.reg"]
    assert [s.epochs for s in full.search.stage] == [1, 5]  # coarse -> fine, as the issue says
    cifar = recipe_config(data="cifar10:/some/cifar-10-batches-py")
    assert cifar.task.name == "cifar10-convnet"
    assert cifar.task.data_dir == "/some/cifar-10-batches-py"
    load_config(DEMO_CONFIG)  # the documented dict is a valid config by itself


@pytest.mark.parametrize(
    ("data", "why"),
    [
        ("mnist", "unknown data set 'mnist'"),
        ("cifar10", "needs the folder"),
        ("digits:/tmp/x", "takes no path"),
    ],
)
def test_bad_data_is_one_line_exit_2_nothing_written(tmp_path: Path, data: str, why: str) -> None:
    with pytest.raises(ConfigError, match=why):
        recipe_config(data=data)
    out = tmp_path / "demo"
    result = runner.invoke(app, ["demo", "--data", data, "--out", str(out)])
    assert result.exit_code == 2 and why in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not out.exists()


def test_a_cifar_folder_that_is_not_there_is_refused_before_anything(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = runner.invoke(
        app, ["demo", "--data", f"cifar10:{tmp_path / 'none'}", "--out", str(out)]
    )
    assert result.exit_code == 2 and not out.exists(), result.output


def test_a_used_out_dir_is_refused(tmp_path: Path) -> None:
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x").write_text("mine")
    result = runner.invoke(app, ["demo", "--fast", "--out", str(tmp_path / "used")])
    assert result.exit_code == 2 and "not an empty directory" in result.output
    assert [p.name for p in (tmp_path / "used").iterdir()] == ["x"]


@pytest.mark.slow
@pytest.mark.xdist_group("fast_demo")  # one run of the demo per session (make test: loadgroup)
def test_fast_demo_writes_every_step_and_reads_its_summary_back(
    fast_demo: tuple[Path, int, str],
) -> None:
    out, code, output = fast_demo
    assert code == 0, output
    for title in ("Gradient check", "Sanity checks", "Hyperparameter search", "Final training",
                  "Ensemble", "Report"):  # fmt: skip
        assert title in output  # a header per step, and its time in the closing summary
    assert "total" in output and "report:" in output
    # every step's output
    for path in ("gradcheck.json", "sanity.json", "study/summary.json", "study/report.html",
                 "final/metrics.jsonl", "final/report.html", "ensemble/ensemble.json",
                 "ensemble/report.html", "report.html", "demo.json"):  # fmt: skip
        assert (out / path).is_file(), path
    assert _json(out / "gradcheck.json")["passed"] and _json(out / "sanity.json")["passed"]
    study = _json(out / "study/summary.json")
    assert [s["executor"] for s in study["stages"]] and len(study["stages"]) == 2
    assert list_checkpoints(out / "final/checkpoints") and list_checkpoints(
        out / "final/checkpoints/ema"
    )
    # the summary's figures are those the steps wrote, not recomputed
    demo, ens = _json(out / "demo.json"), _json(out / "ensemble/ensemble.json")
    members = {str(Path(m["path"]).resolve()): m for m in ens["members"]}
    for key in ("single", "ema"):
        member = members[str(Path(demo[key]["path"]).resolve())]
        assert demo[key]["test_acc"] == member["test_acc"]
    assert "/ema/" in demo["ema"]["path"] and "/ema/" not in demo["single"]["path"]
    assert demo["ensemble"]["test_acc"] == ens["ensemble"]["test_acc"]
    assert len(members) >= 3  # top trials of the search + the final run's two checkpoints
    assert demo["report"] == str(out / "report.html") and demo["seconds"] > 0
    assert [s["name"] for s in demo["steps"]] == [*STEPS, "report"]
    assert demo["test_size"] == 359
    page = (out / "report.html").read_text()
    for sub in ("study", "final", "ensemble"):
        assert f'href="{sub}/report.html"' in page


@pytest.mark.slow
def test_digits_demo_reaches_97_percent_test_accuracy(tmp_path: Path) -> None:
    from babysit.demo import run_demo

    result = run_demo(out=tmp_path / "demo", quiet=True)
    demo = _json(tmp_path / "demo" / "demo.json")
    best = max(demo[k]["test_acc"] for k in ("single", "ema", "ensemble"))
    assert best >= 0.97, result.text()
