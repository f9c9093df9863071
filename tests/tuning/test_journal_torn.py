"""The journal file's last line torn by a kill: the study opens, resumes, counts exactly.

A writer killed mid-write leaves a last line without its newline. Optuna's reader skips
it, but Optuna's own next append would be glued onto it and lost, and the journal would
never read again; babysit's journal cuts the torn tail first (tuning/_journal.py).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import TrialState

import babysit
from babysit.tuning._journal import SealedJournalFileBackend, cut_torn_tail
from babysit.tuning.progress import SearchCallback

HERE = Path(__file__).resolve().parent
# what a SIGKILL in the middle of Optuna's write of "trial 2 is complete" leaves
TORN = b'{"op_code":6,"worker_id":"dead-worker","trial_id":2,"state":1,"val'
CONFIG: dict[str, Any] = {
    "search": {
        "seed": 3,
        "space": {"optim.lr": "loguniform(1e-6, 1e1)"},
        "stage": [{"epochs": 2, "trials": 6}, {"epochs": 2, "trials": 3}],
    }
}


class _KillAfter(SearchCallback):
    """Stops the master (as a kill would) once ``n`` trials have ended."""

    def __init__(self, n: int) -> None:
        self.n = n

    def on_trial_end(self, record: dict[str, Any]) -> None:
        self.n -= 1
        if self.n == 0:
            raise KeyboardInterrupt


def _plain_optuna(journal: Path, name: str) -> list[optuna.trial.FrozenTrial]:
    storage = JournalStorage(JournalFileBackend(str(journal)))
    return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)


def test_cut_torn_tail_keeps_whole_lines_and_saves_the_torn_bytes(tmp_path: Path) -> None:
    path = tmp_path / "journal.log"
    long_line = b"x" * 200_000  # longer than a read chunk: the scan goes back chunk by chunk
    path.write_bytes(b'{"a":1}\n' + long_line + b"\n" + TORN)
    assert cut_torn_tail(path) == len(TORN)
    assert path.read_bytes() == b'{"a":1}\n' + long_line + b"\n"
    assert (tmp_path / "journal.log.torn").read_bytes() == TORN + b"\n"
    assert cut_torn_tail(path) == 0  # a whole last line is left alone
    path.write_bytes(TORN)  # a journal whose only line is torn
    assert cut_torn_tail(path) == len(TORN) and path.read_bytes() == b""


def test_an_append_after_a_torn_line_is_a_line_of_its_own(tmp_path: Path) -> None:
    path = tmp_path / "journal.log"
    backend = SealedJournalFileBackend(str(path))
    backend.append_logs([{"op_code": 0, "n": 1}])
    with path.open("ab") as f:
        f.write(TORN)
    backend.append_logs([{"op_code": 0, "n": 2}, {"op_code": 0, "n": 3}])
    logs = list(JournalFileBackend(str(path)).read_logs(0))  # Optuna's own reader
    assert [log["n"] for log in logs] == [1, 2, 3]


def test_a_torn_last_line_then_resume_counts_every_trial_once(tmp_path: Path) -> None:
    out = tmp_path / "study"
    objective = f"{HERE / 'objectives.py'}:peak_at_1e_3"
    with pytest.raises(KeyboardInterrupt):  # the master stops after 4 of stage 0's 6 trials
        babysit.search(CONFIG, objective=objective, out=out, progress=_KillAfter(4))
    journal = out / "journal.log"
    with journal.open("ab") as f:
        f.write(TORN)

    before = _plain_optuna(journal, out.name)  # the study opens with the torn line last
    assert Counter(t.state for t in before)[TrialState.COMPLETE] == 4

    study = babysit.search(CONFIG, objective=objective, out=out, resume=True)

    trials = _plain_optuna(journal, out.name)  # the journal reads whole after the resume
    for stage, n in ((0, 6), (1, 3)):
        done = [t for t in trials if t.user_attrs["stage"] == stage]
        assert all(t.state == TrialState.COMPLETE for t in done)
        assert sorted(t.user_attrs["slot"] for t in done) == list(range(n))  # each once
    assert Counter(t["state"] for t in study.trials) == {"complete": 9}
    assert sorted(t["number"] for t in study.trials) == [t.number for t in trials]
    lines = journal.read_bytes().split(b"\n")
    assert lines[-1] == b"" and all(json.loads(line) for line in lines[:-1])
    assert (out / "journal.log.torn").read_bytes() == TORN + b"\n"
