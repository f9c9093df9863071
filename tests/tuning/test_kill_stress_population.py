"""Kill stress of the population executor: the master, which trains a stage's trials at
once as one population (workers = 1), SIGKILLed while they train, then resumed.

Run by hand with the long stress: see test_kill_stress.py.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest
from optuna.trial import TrialState

from babysit.tuning.slots import owner_of

from .test_kill_stress import SEED, Tally, _check, _sleep_while, _start, _trials

POPULATION = """
[task]
name = "digits-mlp"
[model]
hidden = [32]
[optim]
rule = "sgd"
[train]
batch_size = 32
report = false
[search]
seed = 3
[search.space]
"optim.lr" = "loguniform(1e-2, 2e-1)"
[[search.stage]]
epochs = 8
trials = 8
executor = "population"
[[search.stage]]
epochs = 6
trials = 4
executor = "population"
"""


def _training(pid: int, out: Path) -> bool:
    """Whether process ``pid`` has claimed trials (a population trains them)."""
    return any(
        t.state == TrialState.RUNNING and (owner_of(t) or {}).get("pid") == pid
        for t in _trials(out)
    )


@pytest.mark.slow
def test_sigkills_of_a_training_population_rerun_its_trials_and_count_each_once(
    tmp_path: Path,
) -> None:
    """The population executor trains a stage's trials at once in the master (workers =
    1): a master killed while they train leaves them RUNNING; --resume fails them as lost
    with the master and trains their slots again as a population of their own."""
    rng, tally = random.Random(SEED), Tally()
    out, log, config = tmp_path / "study", tmp_path / "master.log", tmp_path / "search.toml"
    config.write_text(POPULATION)
    master = _start("search", config, "--out", out, "--quiet", log=log)
    for _ in range(4):
        while master.poll() is None and not _training(master.pid, out):
            time.sleep(0.05)
        if not _sleep_while(master, rng.uniform(0.0, 0.5)):
            break  # the search ended first
        master.kill()
        master.wait()
        tally.kills["master"] += 1
        master = _start("search", "--resume", "--out", out, "--quiet", log=log)
    assert master.wait() == 0, log.read_text()
    _check(out, config, ((8, 8), (6, 4)), tally)
    trials = _trials(out)
    lost = [t for t in trials if t.state == TrialState.FAIL]
    assert tally.kills["master"] >= 2
    # a master killed between taking a trial and stamping it leaves it "unclaimed"
    assert lost and all(t.user_attrs["lost_with"] in ("master", "unclaimed") for t in lost)
    assert {t.user_attrs["executor"] for t in trials} == {"population"}
    for t in lost:  # re-run with the same values, in a new trial dir
        again = [r for r in trials if r.system_attrs.get("retry_history", [None])[-1] == t.number]
        assert len(again) == 1 and again[0].params == t.params
    print(
        f"\npopulation kill stress: {sum(tally.kills.values())} SIGKILLs survived; "
        f"{len(lost)} trials lost with the master and re-run; trials lost: {tally.lost}; "
        f"trials duplicated: {tally.duplicated}"
    )
    assert tally.lost == 0 and tally.duplicated == 0
