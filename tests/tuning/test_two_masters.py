"""One master per study dir: a second ``babysit search`` on it is refused in one line,
while a ``babysit worker`` joins on purpose."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections import Counter
from pathlib import Path

import pytest
from optuna.trial import TrialState
from tests.tuning.polling import journal_trials

from babysit.tuning.slots import owner_of

from .test_workers import _babysit, _config


def _mid_epoch(out: Path) -> bool:
    """Whether a trial is early in its training loop (steps of 0.5 s; metrics.jsonl is
    flushed every second, so the trainer is at most a few steps past the last line): the
    master writes no journal record until the epoch ends, so it is paused holding none of
    the journal's locks (Optuna breaks one held 30 s), only the study dir's."""
    for log in out.glob("trials/*/metrics.jsonl"):
        records = [json.loads(x) for x in log.read_text().splitlines()[:-1]]  # whole lines
        steps = [r["step"] for r in records if r["kind"] == "batch"]
        per_epoch = [r["steps_per_epoch"] for r in records if "steps_per_epoch" in r]
        if (
            steps
            and per_epoch
            and max(steps) <= per_epoch[0] // 2
            and not any(r["kind"] == "epoch" for r in records)
        ):
            return True
    return False


@pytest.mark.slow
def test_a_second_master_is_refused_and_a_worker_joins(tmp_path: Path) -> None:
    out, config = tmp_path / "study", _config(tmp_path, 6)
    # one trial at a time in the master (a population would take every trial at once)
    text = config.read_text().replace("delay = 0.1", "delay = 0.5")
    config.write_text(text + 'executor = "trainer"\n')
    first = _babysit("search", config, "--out", out, "--quiet")  # trials in its own process
    while not _mid_epoch(out):
        assert first.poll() is None, first.communicate()
        time.sleep(0.05)
    assert (out / ".lock").read_text().strip() == str(first.pid)
    os.kill(first.pid, signal.SIGSTOP)  # paused, it holds the lock (and stays mid-search)
    before = sorted(p.name for p in out.iterdir())
    for args in (
        ("search", config, "--out", out),  # a new search into the dir
        ("search", "--resume", "--out", out),  # a second master on the same study
        ("search", config, "--resume", "--out", out, "--workers", "2"),
    ):
        second = _babysit(*args)
        stdout, stderr = second.communicate()
        assert second.returncode == 2, stderr
        assert stdout == "" and len(stderr.strip().splitlines()) == 1
        assert re.fullmatch(
            rf"babysit: error: .*another babysit process \(PID {first.pid}\).*\n", stderr
        ), stderr
        assert sorted(p.name for p in out.iterdir()) == before  # it wrote nothing
    joined = _babysit("worker", "--study", out)  # a worker joins on purpose
    while not any(  # it takes a waiting trial (the master, paused, takes none)
        t.state == TrialState.RUNNING and (owner_of(t) or {}).get("pid") == joined.pid
        for t in journal_trials(out)
    ):
        assert joined.poll() is None, joined.communicate()
        time.sleep(0.1)
    os.kill(first.pid, signal.SIGCONT)
    stdout, stderr = joined.communicate()
    assert joined.returncode == 0, stderr
    ran = int(re.search(r"worker: (\d+) trial\(s\) run", stdout).group(1))  # type: ignore[union-attr]
    _, stderr = first.communicate()
    assert first.returncode == 0, stderr
    trials = journal_trials(out)
    by_joined = [t for t in trials if (owner_of(t) or {}).get("pid") == joined.pid]
    assert ran >= 1 and len(by_joined) == ran  # it took trials of the running search
    complete = Counter(t.user_attrs["slot"] for t in trials if t.state == TrialState.COMPLETE)
    assert complete == dict.fromkeys(range(6), 1)  # each slot once, by one of the two
    assert not (out / ".lock").exists()  # the master's clean exit removed its lock
    resumed = _babysit("search", "--resume", "--out", out, "--quiet")
    _, stderr = resumed.communicate()
    assert resumed.returncode == 0, stderr  # the lock went with its master
