"""SIGKILL at random moments of real runs: checkpoints always load, the resume is bit-identical.

The hardening of issue 13 (the run dir's lock, the sweep of temp files, checkpoints
serialised in memory before the atomic write, the restart of a run with no checkpoint)
must keep what the 55 SIGKILLs of its audit found: every checkpoint left behind loads, and
the resumed run ends with the weights of an uninterrupted one.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from babysit.config import load_config
from babysit.monitor.log import read_metrics
from babysit.training.checkpoint import list_checkpoints, load_checkpoint
from babysit.training.run import train
from babysit.training.rundir import LOCK_FILE

SLOW_TASK = Path(__file__).parents[1] / "tuning" / "slow_task.py"
KILLS = 6


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "slow.toml"
    path.write_text(
        f'[task]\nname = "{SLOW_TASK}:slow_digits"\n[task.options]\ndelay = 0.03\n'
        "[model]\nhidden = [16]\ndropout = 0.2\n[train]\nepochs = 4\nreport = false\n"
        "seed = 0\nkeep_last = 2\n"
    )
    return path


def _babysit(*args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    return subprocess.Popen(
        [sys.executable, "-m", "babysit", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )


@pytest.mark.slow
def test_sigkills_at_random_moments_leave_loadable_checkpoints_and_a_bitwise_resume(
    tmp_path: Path,
) -> None:
    config = _config(tmp_path)
    reference = train(load_config(config), out=tmp_path / "reference", quiet=True)
    out = tmp_path / "run"
    rng = random.Random(13)
    kills = 0
    args = [str(config)]
    while kills < KILLS:
        proc = _babysit("train", *args, "--out", str(out), "--quiet")
        lock = out / LOCK_FILE
        while proc.poll() is None and not (lock.is_file() and lock.read_text().strip()):
            time.sleep(0.02)  # until it trains (the lock names its PID)
        time.sleep(rng.uniform(0.0, 1.5))
        if proc.poll() is not None:  # it finished first: nothing left to kill
            assert proc.returncode == 0, proc.communicate()
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        # killed before it wrote its config (a moment after taking the lock): train again
        args = ["--resume"] if (out / "config.toml").exists() else [str(config)]
        for c in list_checkpoints(out / "checkpoints"):
            load_checkpoint(c.path)  # every checkpoint left behind loads
    final = _babysit("train", *args, "--out", str(out), "--quiet")
    assert final.wait() == 0, final.communicate()
    assert kills >= 2  # the run was really killed along the way
    a = load_checkpoint(list_checkpoints(reference.dir / "checkpoints")[-1].path)["model"]
    b = load_checkpoint(list_checkpoints(out / "checkpoints")[-1].path)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    epochs = [r["epoch"] for r in read_metrics(out / "metrics.jsonl") if r["kind"] == "epoch"]
    assert epochs == [1, 2, 3, 4]  # each epoch logged once, whatever was cut
    assert not list(out.rglob("*.tmp")) and not (out / LOCK_FILE).exists()
