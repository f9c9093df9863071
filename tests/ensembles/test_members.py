"""Member selection: a study's top K, a run's best / last K, files and run dirs; bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from babysit.ensembles.members import best_checkpoint, explicit, from_run, from_study, run_dir_of
from babysit.errors import CheckpointError, ConfigError

# epoch -> val_acc in the file names of a hand-made run
SCORES = {1: 0.50, 2: 0.80, 3: 0.70, 4: 0.90, 5: 0.60, 6: 0.90}


def _run(root: Path, scores: dict[int, float] = SCORES, metric: str = "val_acc") -> Path:
    """A run dir whose checkpoints are named as the trainer names them (contents unread)."""
    (root / "checkpoints").mkdir(parents=True)
    (root / "config.toml").write_text("")
    for epoch, value in scores.items():
        (root / "checkpoints" / f"epoch={epoch:03d}-{metric}={value:.4f}.pt").write_bytes(b"")
    return root


def _epochs(specs: list) -> list[int]:  # type: ignore[type-arg]
    return [int(s.path.name[6:9]) for s in specs]


def test_best_k_checkpoints_of_a_run_best_first_ties_to_the_later_epoch(tmp_path: Path) -> None:
    run = _run(tmp_path / "run")
    specs = from_run(run, k=3, pick="best", direction=lambda _: "max")
    assert _epochs(specs) == [6, 4, 2]
    assert {s.run_dir for s in specs} == {run.resolve()} and specs[0].source == "run"


def test_last_k_checkpoints_of_a_run_newest_first(tmp_path: Path) -> None:
    specs = from_run(_run(tmp_path / "run"), k=2, pick="last", direction=lambda _: "max")
    assert _epochs(specs) == [6, 5]


def test_best_follows_the_direction_of_a_loss(tmp_path: Path) -> None:
    run = _run(tmp_path / "run", {1: 0.3, 2: 0.1, 3: 0.2}, metric="val_loss")
    assert _epochs(from_run(run, k=2, pick="best", direction=lambda _: "min")) == [2, 3]
    assert best_checkpoint(run, "min").name == "epoch=002-val_loss=0.1000.pt"


@pytest.mark.parametrize(
    ("k", "pick", "match"),
    [
        (7, "best", r"--checkpoints 7: .* holds 6 checkpoint\(s\); give at most 6"),
        (0, "best", r"--checkpoints 0: give a whole number of members >= 1"),
        (2, "worst", r"--pick 'worst': use one of best, last"),
    ],
)
def test_bad_k_or_pick_for_a_run(tmp_path: Path, k: int, pick: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        from_run(_run(tmp_path / "run"), k=k, pick=pick, direction=lambda _: "max")


def test_a_dir_that_is_not_a_run(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no config.toml, so it is not a babysit run dir"):
        from_run(tmp_path, k=1, pick="best", direction=lambda _: "max")
    with pytest.raises(ConfigError, match=r"not a directory"):
        from_run(tmp_path / "nope", k=1, pick="best", direction=lambda _: "max")


def test_a_run_without_checkpoints(tmp_path: Path) -> None:
    run = _run(tmp_path / "run", {})
    with pytest.raises(CheckpointError, match=r"no checkpoint in"):
        from_run(run, k=1, pick="best", direction=lambda _: "max")


def _study(root: Path, trials: list[dict], direction: str = "max") -> Path:  # type: ignore[type-arg]
    root.mkdir()
    for t in trials:
        if t["state"] == "complete":
            t["dir"] = f"trials/s{t['stage']}-{t['number']}"
            _run(root / t["dir"], {1: 0.5, 2: t["value"] if direction == "max" else 0.4})
    summary = {
        "best": {},
        "stages": [],
        "border_warnings": [],
        "trials": trials,
        "study": {"direction": direction},
    }
    (root / "summary.json").write_text(json.dumps(summary))
    return root


TRIALS = [
    {"number": 0, "stage": 0, "state": "complete", "value": 0.99},  # a coarse stage: not compared
    {"number": 1, "stage": 1, "state": "complete", "value": 0.70},
    {"number": 2, "stage": 1, "state": "pruned", "value": 0.95},
    {"number": 3, "stage": 1, "state": "complete", "value": 0.90},
    {"number": 4, "stage": 1, "state": "diverged", "value": None},
    {"number": 5, "stage": 1, "state": "complete", "value": 0.80},
]


def test_top_k_complete_trials_of_the_last_stage_by_their_best_checkpoint(tmp_path: Path) -> None:
    study = _study(tmp_path / "study", [dict(t) for t in TRIALS])
    specs = from_study(study, top=2)
    assert [s.run_dir.name for s in specs] == ["s1-3", "s1-5"]
    assert [s.path.name for s in specs] == [
        "epoch=002-val_acc=0.9000.pt",
        "epoch=002-val_acc=0.8000.pt",
    ]
    assert specs[0].source == "study"


def test_top_k_of_a_study_that_minimises(tmp_path: Path) -> None:
    study = _study(tmp_path / "study", [dict(t) for t in TRIALS], direction="min")
    assert [s.run_dir.name for s in from_study(study, top=2)] == ["s1-1", "s1-5"]


def test_a_last_stage_with_no_complete_trial_falls_back_to_the_latest_that_has_one(
    tmp_path: Path,
) -> None:
    trials = [dict(t) for t in TRIALS[:2]] + [{"number": 9, "stage": 2, "state": "failed"}]
    assert [s.run_dir.name for s in from_study(_study(tmp_path / "s", trials), top=1)] == ["s1-1"]


@pytest.mark.parametrize(
    ("trials", "top", "match"),
    [
        (TRIALS, 4, r"--top 4: the study's last stage \(1\) has 3 complete trial\(s\)"),
        (TRIALS, 0, r"--top 0: give a whole number of members >= 1"),
        (TRIALS[2:3] + TRIALS[4:5], 1, r"no complete trial to take members from"),
    ],
)
def test_bad_top_k_or_a_study_with_no_complete_trial(
    tmp_path: Path,
    trials: list[dict],
    top: int,
    match: str,  # type: ignore[type-arg]
) -> None:
    with pytest.raises(ConfigError, match=match):
        from_study(_study(tmp_path / "study", [dict(t) for t in trials]), top=top)


def test_a_dir_that_is_not_a_study(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no summary.json, so it is not a study dir"):
        from_study(tmp_path, top=1)
    (tmp_path / "summary.json").write_text("{oops")
    with pytest.raises(ConfigError, match=r"cannot read summary.json"):
        from_study(tmp_path, top=1)


def test_a_trial_of_a_user_objective_has_no_checkpoint(tmp_path: Path) -> None:
    study = _study(tmp_path / "study", [dict(TRIALS[1])])
    summary = json.loads((study / "summary.json").read_text())
    del summary["trials"][0]["dir"]
    (study / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(ConfigError, match=r"trial 1 has no run dir"):
        from_study(study, top=1)


def test_explicit_members_a_run_dir_is_its_best_checkpoint_a_file_itself(tmp_path: Path) -> None:
    run = _run(tmp_path / "run")
    ema = run / "checkpoints" / "ema" / "epoch=006-val_acc=0.9500.pt"
    ema.parent.mkdir()
    ema.write_bytes(b"")
    specs = explicit([run, ema], direction=lambda _: "max")
    assert specs[0].path.name == "epoch=006-val_acc=0.9000.pt"
    assert specs[1].path == ema.resolve() and specs[1].run_dir == run.resolve()
    assert run_dir_of(ema) == run.resolve()


def test_explicit_members_that_do_not_exist_or_lie_outside_a_run(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"no such checkpoint file or run dir"):
        explicit([tmp_path / "missing.pt"], direction=lambda _: "max")
    stray = tmp_path / "stray.pt"
    stray.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"no config.toml in any folder above it"):
        explicit([stray], direction=lambda _: "max")
    with pytest.raises(ConfigError, match=r"not a babysit run dir"):
        explicit([tmp_path], direction=lambda _: "max")
