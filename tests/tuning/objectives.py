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
