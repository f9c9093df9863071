"""Worker processes: a killed worker's trial is re-queued once, a killed master resumes,
and the trials tried do not depend on the number of workers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch
from optuna.trial import FrozenTrial, TrialState
from tests.tuning.polling import journal_trials, running_a_while, wait_for

import babysit
from babysit.tuning.launch import WorkerError
from babysit.tuning.slots import owner_of

HERE = Path(__file__).resolve().parent
SRC = Path(babysit.__file__).resolve().parents[1]


def _config(tmp_path: Path, trials: int) -> Path:
    """digits-mlp with a 0.1 s sleep per step: a 1-epoch trial takes about 2 s."""
    path = tmp_path / "search.toml"
    path.write_text(
        f"""
[task]
name = "{HERE / "slow_task.py"}:slow_digits"
options = {{delay = 0.1}}
[model]
hidden = [16]
[search]
seed = 1
[search.space]
"optim.lr" = "loguniform(1e-3, 1e-1)"
[[search.stage]]
epochs = 1
trials = {trials}
"""
    )
    return path


def _babysit(*args: str | Path) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "babysit", *map(str, args)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _check_complete_study(study_dir: Path, trials: int) -> list[FrozenTrial]:
    """Every slot counted once, every checkpoint loadable; returns the trials."""
    done = journal_trials(study_dir)
    counted = [t for t in done if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    counted += [t for t in done if t.user_attrs.get("diverged")]
    assert len(counted) == trials
    assert sorted(t.user_attrs["slot"] for t in counted) == list(range(trials))  # none twice
    assert not [t for t in done if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    checkpoints = list(study_dir.glob("trials/*/checkpoints/*.pt"))
    assert len(checkpoints) >= trials
    for path in checkpoints:
        torch.load(path, weights_only=True)
    assert (study_dir / "summary.json").is_file()
    return done


@pytest.mark.slow
def test_a_worker_killed_mid_trial_has_its_trial_requeued_once(tmp_path: Path) -> None:
    out = tmp_path / "study"
    proc = _babysit("search", _config(tmp_path, 4), "--workers", "2", "--out", out, "--quiet")
    trials = wait_for(proc, lambda: journal_trials(out), running_a_while)
    victim = next(t for t in trials if t.state == TrialState.RUNNING and owner_of(t))
    os.kill(owner_of(victim)["pid"], signal.SIGKILL)  # type: ignore[index]
    stdout, stderr = proc.communicate()
    assert proc.returncode == 0, stderr
    done = _check_complete_study(out, 4)
    lost = [t for t in done if t.state == TrialState.FAIL]
    assert [t.number for t in lost] == [victim.number]
    retry = [t for t in done if t.system_attrs.get("failed_trial") == victim.number]
    assert len(retry) == 1 and retry[0].params == victim.params
    summary = babysit.Study.from_dir(out)
    assert Counter(t["state"] for t in summary.trials) == {"complete": 4, "lost": 1}
    assert "best: trial" in stdout


@pytest.mark.slow
def test_a_killed_master_resumes_with_no_trial_lost_or_run_twice(tmp_path: Path) -> None:
    out, config = tmp_path / "study", _config(tmp_path, 4)
    proc = _babysit("search", config, "--workers", "2", "--out", out, "--quiet")

    def some_done_some_running(trials: list[FrozenTrial]) -> bool:
        states = Counter(t.state for t in trials)
        return states[TrialState.COMPLETE] >= 1 and running_a_while(trials)

    wait_for(proc, lambda: journal_trials(out), some_done_some_running)
    proc.kill()
    proc.communicate()
    resumed = _babysit("search", config, "--workers", "2", "--out", out, "--resume", "--quiet")
    _, stderr = resumed.communicate()
    assert resumed.returncode == 0, stderr
    done = _check_complete_study(out, 4)
    lost = [t for t in done if t.state == TrialState.FAIL]
    assert lost  # the trials running when the master died
    for trial in lost:  # each re-queued once
        assert len([t for t in done if t.system_attrs.get("failed_trial") == trial.number]) == 1


@pytest.mark.slow
def test_one_and_two_workers_try_the_same_values(tmp_path: Path) -> None:
    config = {
        "search": {
            "seed": 5,
            "space": {"optim.lr": "loguniform(1e-6, 1e1)", "optim.mu": "default"},
            "stage": [{"epochs": 2, "trials": 12}, {"epochs": 2, "trials": 4}],
        }
    }
    objective = f"{HERE / 'objectives.py'}:peak_at_1e_3"
    runs = [
        babysit.search(config, objective=objective, out=tmp_path / f"k{k}", workers=k)
        for k in (1, 2)
    ]

    def tried(study: babysit.Study) -> list[list[dict[str, Any]]]:
        return [
            sorted((t["params"] for t in study.trials if t["stage"] == s), key=str)
            for s in range(2)
        ]

    assert tried(runs[0]) == tried(runs[1])
    assert runs[0].stages[1]["ranges"] == runs[1].stages[1]["ranges"]
    assert all(t["state"] == "complete" for r in runs for t in r.trials)


@pytest.mark.slow
def test_an_objective_that_raises_in_a_worker_stops_the_search(tmp_path: Path) -> None:
    config = {"search": {"stage": [{"epochs": 1, "trials": 4}]}}
    with pytest.raises(WorkerError, match="the objective has a bug"):
        babysit.search(
            config, objective=f"{HERE / 'objectives.py'}:broken", out=tmp_path / "s", workers=2
        )
