"""babysit.ensemble end to end on tiny runs: its numbers against a plain-torch oracle, the
ensemble.json format, combined sources, seeds, and every bad input leaving nothing written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

import babysit
from babysit.config import load_config
from babysit.ensembles.members import best_checkpoint
from babysit.ensembles.seeds import population_why_not
from babysit.errors import CheckpointError, ConfigError
from babysit.tasks import get_task

from .runs import ema_checkpoint, make_runs, make_study, run_config, trial


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return make_runs(tmp_path_factory.mktemp("runs"), ["a", "b", "c"], keep_last=2)


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    trials = [
        trial(0, 1, "complete", 0.6),
        trial(1, 1, "complete", 0.9),
        trial(2, 1, "pruned", None),
        trial(3, 1, "complete", 0.8),
    ]
    return make_study(tmp_path_factory.mktemp("study"), trials)


def _oracle(paths: list[Path], split: str) -> tuple[float, float]:
    """(acc, loss) of the mean softmax of the checkpoints, with plain torch."""
    task = get_task("digits-mlp")
    x, y = getattr(task, split)
    probs = []
    for path in paths:
        model = task.model_factory({"hidden": [8]}).eval()
        model.load_state_dict(torch.load(path, weights_only=True)["model"])
        with torch.no_grad():
            probs.append(F.softmax(model(x), dim=1))
    p = torch.stack(probs).mean(0)
    acc = (p.argmax(1) == y).double().mean().item()
    return acc, -p[torch.arange(len(y)), y].log().mean().item()


def test_the_ensemble_scores_equal_the_mean_softmax_of_its_members(
    runs: list[Path], tmp_path: Path
) -> None:
    result = babysit.ensemble(runs, out=tmp_path / "ens", quiet=True, report=False)
    paths = [best_checkpoint(r, "max") for r in runs]
    for split in ("val", "test"):
        acc, loss = _oracle(paths, split)
        assert result.scores[f"{split}_acc"] == pytest.approx(acc, abs=1e-12)
        assert result.scores[f"{split}_loss"] == pytest.approx(loss, rel=1e-5)
    first = _oracle(paths[:1], "test")
    assert result.members[0].scores["test_acc"] == pytest.approx(first[0])
    assert result.members[0].scores["test_loss"] == pytest.approx(first[1], rel=1e-5)


def test_ensemble_json_has_the_design_format_and_more(runs: list[Path], tmp_path: Path) -> None:
    result = babysit.ensemble(runs, out=tmp_path / "ens", quiet=True, report=False)
    data = json.loads((tmp_path / "ens" / "ensemble.json").read_text())
    assert {"members", "ensemble", "by_size", "gain", "mean_member", "average"} <= set(data)
    assert set(data["ensemble"]) == {"val_acc", "test_acc", "val_loss", "test_loss"}
    for member, run in zip(data["members"], runs, strict=True):
        assert {"path", "val_acc", "test_acc", "val_loss", "test_loss"} <= set(member)
        assert Path(member["path"]) == best_checkpoint(run, "max").resolve()  # outside: absolute
        assert 0 <= member["val_acc"] <= 1
    assert [row["size"] for row in data["by_size"]] == [1, 2, 3]
    assert data["by_size"][-1]["test_acc"] == data["ensemble"]["test_acc"]
    best = max(data["members"], key=lambda m: m["val_acc"])
    assert data["by_size"][0]["val_acc"] == best["val_acc"]  # best-first by validation
    mean = sum(m["test_acc"] for m in data["members"]) / 3
    assert data["gain"]["test_acc"] == pytest.approx(data["ensemble"]["test_acc"] - mean)
    assert result.gain["test_acc"] == pytest.approx(data["gain"]["test_acc"])


def test_logit_averaging_is_an_option(runs: list[Path], tmp_path: Path) -> None:
    probs = babysit.ensemble(runs, out=tmp_path / "p", quiet=True, report=False)
    logits = babysit.ensemble(runs, out=tmp_path / "l", quiet=True, report=False, average="logits")
    assert logits.average == "logits"
    assert logits.scores["val_loss"] != probs.scores["val_loss"]
    assert [m.scores for m in logits.members] == [m.scores for m in probs.members]


def test_sources_combine_a_study_plus_an_ema_checkpoint_and_a_run(
    study: Path, runs: list[Path], tmp_path: Path
) -> None:
    ema = ema_checkpoint(runs[0])
    result = babysit.ensemble(
        [ema, best_checkpoint(runs[1], "max")],
        from_study=study,
        top=2,
        from_run=runs[1],
        checkpoints=2,
        pick="last",
        out=tmp_path / "ens",
        quiet=True,
        report=False,
    )
    names = [(m.source, m.run_dir.name) for m in result.members]
    # the run's best checkpoint is also one of its last two: counted once
    assert names == [
        ("study", "s1-1"),
        ("study", "s1-3"),
        ("run", "b"),
        ("run", "b"),
        ("member", "a"),
    ]
    assert result.members[-1].path == ema.resolve()


def test_a_study_alone_writes_into_the_study_and_its_page_shows_it(
    study: Path, tmp_path: Path
) -> None:
    copy = shutil.copytree(study, tmp_path / "study")
    result = babysit.ensemble(from_study=copy, top=3, quiet=True)
    assert result.dir == copy and (copy / "ensemble.json").is_file()
    page = (copy / "report.html").read_text()
    assert "babysit study" in page and "trials/s1-0/checkpoints/epoch=" in page
    assert "accuracy against ensemble size" in page


def test_seeds_train_as_one_population_then_ensemble(tmp_path: Path) -> None:
    result = babysit.ensemble(
        seeds=3, config=run_config(seed=5), out=tmp_path / "e", quiet=True, report=False
    )
    assert [m.run_dir.name for m in result.members] == ["seed5", "seed6", "seed7"]
    assert (tmp_path / "e" / "members" / "population.json").is_file()
    seeds = [load_config(m.run_dir / "config.toml").train.seed for m in result.members]
    assert seeds == [5, 6, 7]
    assert json.loads((tmp_path / "e" / "ensemble.json").read_text())["members"][0]["path"] == (
        result.members[0].path.relative_to(tmp_path / "e").as_posix()
    )


def test_seeds_train_one_after_another_where_no_population_applies() -> None:
    assert population_why_not(load_config(run_config())) is None
    for change, why in [
        ({"epochs": 1.5}, "whole epochs"),
        ({"sanity": True}, "pre-training checks"),
    ]:
        assert why in str(population_why_not(load_config(run_config(**change))))
    lbfgs = run_config()
    lbfgs["optim"] = {"rule": "lbfgs", "lr": 1.0}
    assert "no pure update rule" in str(population_why_not(load_config(lbfgs)))


@pytest.mark.slow
def test_seeds_by_the_trainer_and_a_distilled_student(tmp_path: Path) -> None:
    student: dict[str, Any] = run_config(epochs=1)
    student["distill"] = {"temperature": 2.0, "alpha": 0.5}
    result = babysit.ensemble(
        seeds=2,
        config=run_config(epochs=1.5),
        distill=student,
        out=tmp_path / "e",
        quiet=True,
        report=False,
    )
    assert [m.run_dir.name for m in result.members] == ["seed0", "seed1"]
    assert not (tmp_path / "e" / "members" / "population.json").exists()  # the trainer's
    assert result.distill is not None
    assert result.distill["temperature"] == 2.0 and result.distill["alpha"] == 0.5
    students = result.distill["students"]
    assert students["distilled"]["dir"] == "students/distilled"
    assert students["distilled"]["test_acc"] != students["labels"]["test_acc"]
    assert (tmp_path / "e" / "students" / "labels" / "checkpoints").is_dir()


def _bad_cases(runs: list[Path], study: Path, tmp: Path) -> list[tuple[dict[str, Any], str]]:
    garbage = runs[2] / "checkpoints" / "junk" / "epoch=001-val_acc=0.1000.pt"
    garbage.parent.mkdir(parents=True, exist_ok=True)
    garbage.write_bytes(b"junk")
    spiral = run_config()
    spiral["task"] = {"name": "spiral-mlp"}
    no_complete = make_study(tmp / "nc", [trial(0, 0, "pruned", None)])
    return [
        ({"members": [runs[0] / "checkpoints" / "missing.pt"]}, "no such checkpoint file"),
        ({"members": [garbage]}, "cannot load the checkpoint"),
        ({"from_run": runs[0], "checkpoints": 9}, "holds 2 checkpoint"),
        ({"from_study": study, "top": 0}, ">= 1"),
        ({"from_study": study, "top": 9}, "has 3 complete trial"),
        ({"from_study": no_complete, "top": 1}, "no complete trial"),
        ({"from_study": tmp, "top": 1}, "not a study dir"),
        ({"from_run": study, "checkpoints": 1}, "not a babysit run dir"),
        ({"from_study": study}, "--from-study DIR needs --top K"),
        ({"members": [runs[0]], "average": "median"}, "unknown average"),
        ({"members": [runs[0]], "seeds": 2, "config": spiral}, "members of different tasks"),
        ({"members": [runs[0]], "distill": spiral}, "members of different tasks"),
        ({"members": [runs[0]], "alpha": 0.5}, "need --distill"),
        ({}, "no members"),
    ]


def test_each_bad_input_is_one_error_and_nothing_is_written(
    runs: list[Path], study: Path, tmp_path: Path
) -> None:
    for kwargs, match in _bad_cases(runs, study, tmp_path):
        out = tmp_path / "never"
        with pytest.raises((ConfigError, CheckpointError), match=match) as info:
            babysit.ensemble(**kwargs, out=out, quiet=True)
        assert "\n" not in str(info.value)
        assert not out.exists(), kwargs


def test_an_out_dir_that_is_not_empty_is_refused(runs: list[Path], tmp_path: Path) -> None:
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x").write_text("")
    with pytest.raises(ConfigError, match=r"directory is not empty"):
        babysit.ensemble(runs, out=tmp_path / "used", quiet=True)


def test_one_path_is_one_member(runs: list[Path], tmp_path: Path) -> None:
    result = babysit.ensemble(str(runs[0]), out=tmp_path / "one", quiet=True, report=False)
    assert [m.run_dir for m in result.members] == [runs[0].resolve()]
    assert result.scores == pytest.approx(result.members[0].scores, rel=1e-6)


def test_a_study_that_holds_students_already_is_refused(study: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(study, tmp_path / "study")
    (copy / "students").mkdir()
    with pytest.raises(ConfigError, match=r"holds students/ already"):
        babysit.ensemble(from_study=copy, top=1, distill=run_config(), quiet=True)
    (copy / "members").mkdir()
    with pytest.raises(ConfigError, match=r"holds members/ already"):
        babysit.ensemble(from_study=copy, top=1, seeds=1, config=run_config(), out=copy)
    assert not (copy / "ensemble.json").exists()
