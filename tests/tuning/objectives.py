"""Objectives that worker processes import by path ("tests/tuning/objectives.py:fn")."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any


def trivial(params: dict[str, Any], report: Callable[[int, float], None]) -> float:
    return 0.0


def peak_at_1e_3(params: dict[str, Any], report: Callable[[int, float], None]) -> float:
    """-(log10 lr + 3) ** 2, reported over two epochs."""
    score = -((math.log10(params["optim.lr"]) + 3) ** 2)
    report(1, score - 1.0)
    report(2, score)
    return score


def broken(params: dict[str, Any], report: Callable[[int, float], None]) -> float:
    raise RuntimeError("the objective has a bug")


def slow_peak(params: dict[str, Any], report: Callable[[int, float], None]) -> float:
    """peak_at_1e_3 over three epochs of 0.8 s each: a trial long enough to be killed."""
    import time

    score = -((math.log10(params["optim.lr"]) + 3) ** 2)
    for epoch in (1, 2, 3):
        time.sleep(0.8)
        report(epoch, score - 1.0 / epoch)
    return score


def cut_off_once(params: dict[str, Any], report: Any) -> float:
    """As if the master took this worker for dead mid-trial: slot 0's first try is failed
    and re-queued (what the master does to a lost trial) before it reports, so the
    storage refuses its report; every other trial scores 0."""
    from babysit.tuning.slots import TrialQueue

    trial = report.trial
    storage = trial.study._storage
    frozen = storage.get_trial(trial._trial_id)
    if frozen.user_attrs["slot"] == 0 and "failed_trial" not in frozen.system_attrs:
        TrialQueue(trial.study, storage).requeue_orphans([frozen], lambda t: True)
    report(1, 0.0)
    return 0.0
