"""Kill stress: SIGKILLs at random moments of real searches with local workers.

Each search (two stages of digits trials whose steps sleep 30 ms, 2 local workers, real
checkpoints and metrics.jsonl) is killed up to ``KILLS_PER_SEARCH`` times, at moments
drawn from a seeded RNG once its trials run:
a worker, the master alone, the master's process group, or a worker and the master at
once; after each master kill ``babysit search --resume`` continues it. The study must
end with exactly the requested number of complete trials per stage, each slot complete
once (none lost, none duplicated), nothing left running or waiting, every checkpoint
loadable with ``weights_only=True``, every trial's metrics.jsonl without a duplicated
epoch, and summary.json matching the storage. The counts are printed.

The budget of a slot (slots.py): a trial lost with its master is re-queued however often
that happens; one lost with its worker ``RETRIES`` times at most. The kills here respect
that budget: a worker whose trial's slot was already lost with a worker is not chosen.

``BABYSIT_STRESS_KILLS`` sets the number of kills (default 30); ``BABYSIT_STRESS_SEED``
the RNG's seed. A long run by hand::

    BABYSIT_STRESS_KILLS=300 PYTHONPATH=src python -m pytest -s tests/tuning/test_kill_stress.py
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import pytest
import torch
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import FrozenTrial, TrialState

import babysit
from babysit.config import load_config
from babysit.tuning.slots import owner_of
from babysit.tuning.space import parse_space
from babysit.tuning.summary import trial_record

SRC = Path(babysit.__file__).resolve().parents[1]
KILLS = int(os.environ.get("BABYSIT_STRESS_KILLS", "30"))
SEED = int(os.environ.get("BABYSIT_STRESS_SEED", "0"))
KILLS_PER_SEARCH = 10
STAGES = ((2, 8), (2, 3))  # (epochs, trials) per stage
# digits-mlp whose training steps sleep 30 ms: a trial lasts about 2 s of wall time but
# little CPU, so a search lives through its kills and the cost is the processes' restarts
TASK = Path(__file__).resolve().parent / "slow_task.py"
KINDS = ("worker", "master", "master group", "worker and master")
WEIGHTS = (0.55, 0.15, 0.15, 0.15)

CONFIG = f"""
[task]
name = "{TASK}:slow_digits"
options = {{{{delay = 0.03}}}}
[model]
hidden = [16]
[optim]
rule = "sgd"
[train]
batch_size = 64
report = false
[search]
seed = {{seed}}
[search.space]
"optim.lr" = "loguniform(1e-2, 2e-1)"
{
    "".join(
        f'''[[search.stage]]
epochs = {e}
trials = {n}
executor = "trainer"
'''
        for e, n in STAGES
    )
}
"""


@dataclass
class Tally:
    kills: Counter[str] = field(default_factory=Counter)
    lost: int = 0  # slots with no complete trial
    duplicated: int = 0  # slots complete more than once
    searches: int = 0
    workers_seen: set[int] = field(default_factory=set)


def _start(*args: str | Path, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
    }
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "babysit", *map(str, args)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: "the master's group"
        )


def _study(out: Path) -> optuna.Study | None:
    journal = out / "journal.log"
    if not journal.is_file():
        return None
    try:
        return optuna.load_study(
            study_name=out.name, storage=JournalStorage(JournalFileBackend(str(journal)))
        )
    except KeyError:  # not made yet
        return None


def _trials(out: Path) -> list[FrozenTrial]:
    study = _study(out)
    return [] if study is None else study.get_trials(deepcopy=False)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


def _children(pid: int) -> list[int]:
    """The live processes whose parent is ``pid`` (the master's local workers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def _wait_until_working(master: subprocess.Popen[bytes], out: Path) -> bool:
    """Until one of ``master``'s workers runs a trial: the kill moments are drawn from
    there (under load, starting Python takes seconds: kills drawn from the start would
    mostly hit processes still importing torch); False when the master ended first."""
    while master.poll() is None:
        workers = set(_children(master.pid))
        if any(
            t.state == TrialState.RUNNING and (owner_of(t) or {}).get("pid") in workers
            for t in _trials(out)
        ):
            return True
        time.sleep(0.05)
    return False


def _sleep_while(master: subprocess.Popen[bytes], seconds: float) -> bool:
    """Sleep up to ``seconds`` while the master runs; whether it still runs."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if master.poll() is not None:
            return False
        time.sleep(0.05)
    return master.poll() is None


def _kill_a_worker(master: int, out: Path, hit: set[tuple[int, int]], tally: Tally) -> bool:
    """SIGKILL one of ``master``'s workers whose trial's slot no worker kill hit yet."""
    workers = _children(master)
    tally.workers_seen.update(workers)
    running = {
        owner_of(t)["pid"]: (t.user_attrs["stage"], t.user_attrs["slot"])  # type: ignore[index]
        for t in _trials(out)
        if t.state == TrialState.RUNNING and owner_of(t) is not None
    }
    allowed = [pid for pid in workers if running.get(pid) not in hit]
    if not allowed:
        return False
    victim = random.choice(allowed)
    if victim in running:
        hit.add(running[victim])
    os.kill(victim, signal.SIGKILL)
    return True


def _one_search(rng: random.Random, tmp: Path, index: int, kills: int, tally: Tally) -> int:
    """Run one search, killing it up to ``kills`` times; the kills made."""
    out, log = tmp / f"study-{index}", tmp / f"master-{index}.log"
    config = tmp / f"search-{index}.toml"
    config.write_text(CONFIG.format(seed=SEED * 1000 + index))
    resume = ["search", "--resume", "--out", out, "--workers", "2", "--quiet"]
    master = _start("search", config, "--out", out, "--workers", "2", "--quiet", log=log)
    made, hit = 0, set()
    while made < kills:
        if not _wait_until_working(master, out) or not _sleep_while(master, rng.uniform(0, 1.0)):
            break  # the search ended first: the rest of its kills go to the next one
        kind = rng.choices(KINDS, WEIGHTS)[0]
        tally.workers_seen.update(_children(master.pid))
        if kind == "worker":
            if _kill_a_worker(master.pid, out, hit, tally):
                made += 1
                tally.kills[kind] += 1
            continue
        if kind == "worker and master" and _kill_a_worker(master.pid, out, hit, tally):
            made += 1  # two SIGKILLs at once
        if kind == "master group":
            os.killpg(master.pid, signal.SIGKILL)
        else:
            master.kill()
        master.wait()
        made += 1
        tally.kills[kind] += 1
        master = _start(*resume, log=log)
    assert master.wait() == 0, log.read_text()
    _check(out, config, STAGES, tally)
    tally.searches += 1
    return made


def _check(out: Path, config: Path, stages: tuple[tuple[int, int], ...], tally: Tally) -> None:
    """Each slot of each stage complete once; checkpoints, logs and summary.json sound."""
    trials = _trials(out)
    assert not [t.number for t in trials if not t.state.is_finished()]
    for s, (_, n) in enumerate(stages):
        complete = Counter(
            t.user_attrs["slot"]
            for t in trials
            if t.user_attrs.get("stage") == s and t.state == TrialState.COMPLETE
        )
        tally.lost += sum(1 for slot in range(n) if complete[slot] == 0)
        tally.duplicated += sum(1 for slot in range(n) if complete[slot] > 1)
        assert sum(complete.values()) == n and sorted(complete) == list(range(n))
    for path in out.glob("trials/*/checkpoints/*.pt"):
        torch.load(path, weights_only=True)
    for log in out.glob("trials/*/metrics.jsonl"):
        lines = log.read_text().splitlines()
        records = []
        for i, line in enumerate(lines):
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                assert i == len(lines) - 1, f"{log}: line {i + 1} is torn"  # only a last line
        epochs = [r["epoch"] for r in records if r.get("kind") == "epoch"]
        assert len(epochs) == len(set(epochs)), f"{log}: epochs {epochs}"
    by_number = {t.number: t for t in trials}
    for t in trials:  # a complete trial's score is its run's best validation epoch
        if t.state == TrialState.COMPLETE:
            run = out / t.user_attrs["dir"]
            epochs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
            best = max(r["val_acc"] for r in epochs if r.get("kind") == "epoch")
            assert t.value == pytest.approx(best)
            assert list((run / "checkpoints").glob("*.pt"))
    summary = json.loads((out / "summary.json").read_text())
    space = parse_space(load_config(config))
    assert summary["trials"] == [
        json.loads(json.dumps(trial_record(by_number[r["number"]], space)))
        for r in summary["trials"]
    ]
    assert sorted(r["number"] for r in summary["trials"]) == sorted(by_number)
    for s, stage in enumerate(summary["stages"]):
        states = Counter(r["state"] for r in summary["trials"] if r["stage"] == s)
        assert stage["counts"] == dict(states) and states["complete"] == stages[s][1]
    last = [r for r in summary["trials"] if r["stage"] == len(stages) - 1]
    best = max((r for r in last if r["state"] == "complete"), key=lambda r: r["value"])
    assert summary["best"]["trial"] == best["number"]


@pytest.mark.slow
def test_sigkills_of_workers_and_masters_lose_and_duplicate_no_trial(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    random.seed(SEED)
    tally, made, index = Tally(), 0, 0
    while made < KILLS:
        made += _one_search(rng, tmp_path, index, min(KILLS_PER_SEARCH, KILLS - made), tally)
        index += 1
    for pid in tally.workers_seen:  # every worker went with its master or was stopped
        while _alive(pid):
            time.sleep(0.1)
    print(
        f"\nkill stress: {made} SIGKILLs survived ({dict(tally.kills)}) over "
        f"{tally.searches} searches; trials lost: {tally.lost}; trials duplicated: "
        f"{tally.duplicated}"
    )
    assert made >= KILLS and tally.lost == 0 and tally.duplicated == 0
