"""Run dirs: one process at a time (the lock), remains of unfinished runs, nothing left behind.

Issue 13, defects 2 (a run killed before its first checkpoint), 3 (no lock on a run dir),
6 (errors found after the parents were made left empty dirs) and the sweep of 10 (temp
files of writers killed mid-write). Each table row reproduced its defect before the fix.
"""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from babysit.cli import app
from babysit.config import Config
from babysit.monitor.log import read_metrics
from babysit.training.callbacks import Callback
from babysit.training.checkpoint import list_checkpoints, load_checkpoint
from babysit.training.run import train
from babysit.training.rundir import LOCK_FILE, lock_run_dir

runner = CliRunner()
GATED_TASK = Path(__file__).parent / "gated_task.py"


def _cli(*args: str) -> tuple[int, list[str]]:
    result = runner.invoke(app, list(args))
    return result.exit_code, [ln for ln in result.output.splitlines() if ln.strip()]


def _one_error_line(lines: list[str]) -> str:
    assert len(lines) == 1 and lines[0].startswith("babysit: error:"), lines
    return lines[0]


def _write_config(path: Path, cfg: dict[str, Any]) -> Path:
    path.write_text(Config.from_dict(cfg).to_toml(), encoding="utf-8")
    return path


def _epochs(run_dir: Path) -> list[int]:
    return [r["epoch"] for r in read_metrics(run_dir / "metrics.jsonl") if r["kind"] == "epoch"]


def _final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(list_checkpoints(run_dir / "checkpoints")[-1].path)["model"]


class _Raise(Callback):
    """User code that fails: at a step of the first epoch, or before the first epoch."""

    def __init__(self, at_step: int | None, error: type[BaseException]) -> None:
        self.at_step, self.error = at_step, error

    def on_train_start(self, trainer: Any) -> None:
        if self.at_step is None:
            raise self.error("user code failed before the first epoch")

    def on_step_end(self, trainer: Any, step: int, loss: float) -> None:
        if step == self.at_step:
            raise self.error("killed")


# defect 2: (how the first run ended, the command that continues it)
UNFINISHED = [
    ("killed in epoch 1", _Raise(5, KeyboardInterrupt), "train"),
    ("killed in epoch 1", _Raise(5, KeyboardInterrupt), "resume"),
    ("user code failed before the first epoch", _Raise(None, RuntimeError), "train"),
    ("user code failed before the first epoch", _Raise(None, RuntimeError), "resume"),
    ("user code failed in epoch 1", _Raise(3, ValueError), "resume"),
]


@pytest.mark.parametrize(("how", "failure", "command"), UNFINISHED)
def test_a_run_that_never_checkpointed_can_be_trained_again_or_resumed(
    tmp_path: Path, tiny_config: dict, how: str, failure: _Raise, command: str
) -> None:
    cfg = copy.deepcopy(tiny_config)
    cfg["train"]["epochs"] = 2
    config = _write_config(tmp_path / "c.toml", cfg)
    reference = train(cfg, out=tmp_path / "reference", quiet=True)
    out = tmp_path / "run"
    with pytest.raises((KeyboardInterrupt, RuntimeError, ValueError)):
        train(cfg, out=out, quiet=True, callbacks=[failure])
    assert not list_checkpoints(out / "checkpoints"), how
    args = ["--resume"] if command == "resume" else [str(config)]
    code, lines = _cli("train", *args, "--out", str(out), "--quiet")
    assert code == 0, (how, lines)
    assert _epochs(out) == [1, 2]  # the run starts over: no epoch of the dead one is left
    a, b = _final_weights(reference.dir), _final_weights(out)
    assert all(torch.equal(a[k], b[k]) for k in a)  # from epoch 0, as if never interrupted
    assert not (out / LOCK_FILE).exists()


@pytest.mark.parametrize(
    ("kept", "resume_says"),
    [("a user's file", "notes.txt"), ("a run that diverged in epoch 1", "ended before")],
)
def test_a_dir_that_is_more_than_remains_is_still_refused(
    tmp_path: Path, tiny_config: dict, kept: str, resume_says: str
) -> None:
    out = tmp_path / "run"
    cfg = copy.deepcopy(tiny_config)
    if kept == "a user's file":
        with pytest.raises(KeyboardInterrupt):
            train(cfg, out=out, quiet=True, callbacks=[_Raise(2, KeyboardInterrupt)])
        (out / "notes.txt").write_text("mine")
    else:
        cfg["optim"] = {"rule": "sgd", "lr": 1e6}
        assert train(cfg, out=out, quiet=True).diverged  # a result: findings.json says so
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    config = _write_config(tmp_path / "c.toml", cfg)
    code, lines = _cli("train", str(config), "--out", str(out), "--quiet")
    assert code == 2 and "not empty" in _one_error_line(lines)
    code, lines = _cli("train", "--resume", "--out", str(out), "--quiet")
    assert code == 2 and resume_says in _one_error_line(lines)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


# defect 3: a second process on a locked run dir; (command, how the dir was prepared)
@pytest.mark.parametrize("command", ["train", "resume"])
def test_a_second_process_on_a_locked_run_dir_exits_2_naming_the_pid(
    tmp_path: Path, tiny_config: dict, command: str
) -> None:
    config = _write_config(tmp_path / "c.toml", tiny_config)
    out = tmp_path / "run"
    if command == "resume":
        train(tiny_config, out=out, quiet=True)
    else:
        out.mkdir()
    before = sorted(p.name for p in out.rglob("*"))
    with lock_run_dir(out):  # flock: a second open file description of the file conflicts
        args = ["--resume"] if command == "resume" else [str(config)]
        code, lines = _cli("train", *args, "--out", str(out), "--quiet")
    assert code == 2
    assert f"PID {os.getpid()}" in _one_error_line(lines) and str(out) in lines[0]
    assert sorted(p.name for p in out.rglob("*")) == before  # nothing written, nothing removed


def _gated_config(tmp_path: Path) -> tuple[Path, Path]:
    """A config whose training waits until the returned gate file exists."""
    gate = tmp_path / "gate"
    text = (
        f'[task]\nname = "{GATED_TASK}:gated_digits"\n[task.options]\ngate = "{gate}"\n'
        "[model]\nhidden = [16]\n[train]\nepochs = 2\nreport = false\nseed = 0\n"
    )
    path = tmp_path / "gated.toml"
    path.write_text(text)
    return path, gate


def _babysit(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    return subprocess.Popen(
        [sys.executable, "-m", "babysit", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _wait_for(proc: subprocess.Popen[str], ready: Callable[[], bool]) -> None:
    """Poll until ``ready()`` (no time limit: a process that ends first fails the test)."""
    while not ready():
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)


@pytest.mark.slow
def test_two_real_processes_on_one_run_dir_and_a_sigkill_leaves_no_stale_lock(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    config, gate = _gated_config(tmp_path)
    out = tmp_path / "run"
    first = _babysit("train", str(config), "--out", str(out), "--quiet")
    request.addfinalizer(first.kill)  # never left waiting at its gate, whatever fails
    _wait_for(first, gate.with_suffix(".waiting").exists)  # held at its first step
    lock = out / LOCK_FILE
    assert lock.read_text().strip() == str(first.pid)
    for args in ([str(config)], ["--resume"]):
        second = _babysit("train", *args, "--out", str(out), "--quiet")
        _, err = second.communicate()
        assert second.returncode == 2, err
        assert f"PID {first.pid}" in _one_error_line(err.strip().splitlines())
    first.send_signal(signal.SIGKILL)  # before its first checkpoint (defect 2, for real)
    first.communicate()
    gate.touch()
    resumed = _babysit("train", "--resume", "--out", str(out), "--quiet")
    _, err = resumed.communicate()
    assert resumed.returncode == 0, err  # the kernel released the dead process's lock
    assert _epochs(out) == [1, 2]  # each epoch logged once
    assert not lock.exists()


# defect 6: bad input found once the run dir's parents exist; (--set, needle)
BUILT_TOO_LATE = [
    ("model.hidden=[0]", "hidden"),
    ('model.activation="nope"', "activation"),
    ("optim.lr=inf", "optim.lr"),
    ("schedule.every=inf", "schedule.every"),
]


@pytest.mark.parametrize(("setting", "needle"), BUILT_TOO_LATE)
def test_bad_input_found_late_removes_exactly_what_was_made(
    tmp_path: Path, tiny_config: dict, setting: str, needle: str
) -> None:
    config = _write_config(tmp_path / "c.toml", tiny_config)
    existing = tmp_path / "existing"
    (existing / "empty").mkdir(parents=True)
    for out in (tmp_path / "a" / "b" / "run", existing / "new" / "run", existing / "empty"):
        code, lines = _cli("train", str(config), "--set", setting, "--out", str(out))
        assert code == 2 and needle in _one_error_line(lines), lines
    assert not (tmp_path / "a").exists()
    assert not (existing / "new").exists()
    assert list((existing / "empty").iterdir()) == []  # it was there before: kept, empty


# defect 10 (its sweep): temp files of writers killed mid-write; (where, whose)
@pytest.mark.parametrize("where", [".", "checkpoints", "plots"])
def test_the_next_start_sweeps_the_temp_files_of_dead_writers_only(
    tmp_path: Path, tiny_config: dict, where: str
) -> None:
    out = tmp_path / "run"
    train(tiny_config, out=out, quiet=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    alive = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                             stdin=subprocess.PIPE)  # fmt: skip
    try:
        folder = out / where
        folder.mkdir(exist_ok=True)
        stale = folder / f".epoch=004-val_acc=0.9000.pt.{dead.stdout.strip()}-k3x9q_ab.tmp"
        live = folder / f".epoch=004-val_acc=0.9000.pt.{alive.pid}-p0q1r2s3.tmp"
        stale.write_bytes(b"\0" * 4096)
        live.write_bytes(b"\0" * 4096)
        longer = {**tiny_config, "train": {**tiny_config["train"], "epochs": 4}}
        train(longer, out=out, resume=True, quiet=True)
        assert not stale.exists()
        assert live.exists()  # its writer may still be writing it
    finally:
        alive.communicate()
