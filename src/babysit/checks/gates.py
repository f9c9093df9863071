"""The checks that run before training, by name: for ``babysit sanity|gradcheck`` and the trainer.

Each takes the task and the resolved config and returns a report with ``passed``,
``to_dict()``, ``table()`` and ``footer()``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from babysit._registry import Registry
from babysit.config import Config
from babysit.tasks import Task

__all__ = ["GATES", "PreCheck"]


@dataclass(frozen=True)
class PreCheck:
    name: str  # also the config switch train.<name> and the run dir's <name>.json
    title: str
    run: Callable[[Task, Config], Any]


def _sanity(task: Task, cfg: Config) -> Any:
    from babysit.checks.sanity.check import sanity_task

    return sanity_task(task, cfg.model_table(), reg=cfg.train.reg, seed=cfg.train.seed)


def _gradcheck(task: Task, cfg: Config) -> Any:
    from babysit.checks.gradcheck.check import gradcheck_task

    g = cfg.gradcheck  # the [gradcheck] table
    return gradcheck_task(
        task,
        cfg.model_table(),
        reg=cfg.train.reg,
        seed=cfg.train.seed,
        burn_in_steps=g.burn_in_steps,
        datapoints=g.datapoints,
        h=g.h,
        coords_per_param=g.coords_per_param,
        wrt=g.wrt,
    )


# in the order the trainer runs them: the cheap gate first
GATES: Registry[PreCheck] = Registry("pre-training check")
for _gate in (
    PreCheck("sanity", "sanity checks", _sanity),
    PreCheck("gradcheck", "gradient check (analytic vs centered difference)", _gradcheck),
):
    GATES.add(_gate.name, _gate)
