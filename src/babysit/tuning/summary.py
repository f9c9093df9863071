"""What a search leaves behind: the :class:`Study` and its ``summary.json``.

``summary.json`` (DESIGN.md) holds ``{best: {params, value, trial}, stages: [{epochs,
trials, ranges, counts}], border_warnings: [{param, side, value, low, high, stage}]}``,
plus ``trials`` (one record per trial: number, stage, state, params, value, seconds, and
``epochs``, ``dir``, ``error``, ``retry_of``, ``lost_with`` where they apply; a trial of a
``mode = "pbt"`` stage also ``pbt_lineage``, its exploit events, and ``final_params``, the
explored values it ended with, its ``params`` being those it started with), ``study``
(name, storage, metric, direction) and ``advice``: lines for the user, e.g. when every
trial diverged (:func:`advice_for`; the CLI prints them). A trial's state is
``complete``, ``pruned``, ``diverged``, ``failed`` (an error), ``lost`` (its process died,
``lost_with`` its ``"worker"``, its ``"master"`` or ``"unclaimed"``; its slot re-queued
as a trial whose ``retry_of`` is the slot's first try: slots.py),
``running`` or ``waiting``. ``ranges`` are distribution strings in the config's syntax,
so a stage's ranges can be pasted into a config. Scores that are NaN/inf are written as
strings (babysit's JSON convention).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from babysit._io import json_restore, read_json_file, write_json_atomic
from babysit.errors import ReportError
from babysit.tuning.dimensions import Dimension
from babysit.tuning.slots import LOST_WITH, is_lost

__all__ = [
    "PBT_ATTRS",
    "SUMMARY_FILE",
    "Study",
    "advice_for",
    "best_of",
    "summarize",
    "trial_record",
]

SUMMARY_FILE = "summary.json"
PBT_ATTRS = ("pbt_lineage", "final_params")  # a PBT trial's user attributes, kept as they are
_STATES = {
    TrialState.COMPLETE: "complete",
    TrialState.PRUNED: "pruned",
    TrialState.FAIL: "failed",
    TrialState.RUNNING: "running",
    TrialState.WAITING: "waiting",
}


@dataclass
class Study:
    """A finished search; ``summary.json`` in ``dir`` holds the same."""

    dir: Path
    best: dict[str, Any]  # {params, value, trial}; all None when no trial completed
    trials: list[dict[str, Any]] = field(default_factory=list)
    border_warnings: list[dict[str, Any]] = field(default_factory=list)
    stages: list[dict[str, Any]] = field(default_factory=list)  # {epochs, trials, ranges, ...}
    study: dict[str, Any] = field(default_factory=dict)  # {name, storage, metric, direction}
    advice: list[str] = field(default_factory=list)  # e.g. every trial diverged: what to do
    report: Path | None = field(default=None, compare=False)  # report.html, when written

    def to_dict(self) -> dict[str, Any]:
        return {
            "best": self.best,
            "stages": self.stages,
            "border_warnings": self.border_warnings,
            "trials": self.trials,
            "study": self.study,
            "advice": self.advice,
        }

    def write(self) -> Path:
        return write_json_atomic(self.dir / SUMMARY_FILE, self.to_dict())

    @classmethod
    def from_dir(cls, path: str | os.PathLike[str]) -> Study:
        """Read ``summary.json`` of a study dir."""
        root = Path(path)
        try:
            data = read_json_file(root / SUMMARY_FILE)  # untrusted: size and depth capped
        except (OSError, ValueError) as exc:
            raise ReportError(
                f"{root / SUMMARY_FILE}: cannot read the study summary: {exc}"
            ) from None
        return cls(
            dir=root,
            best=data["best"],
            trials=data.get("trials", []),
            border_warnings=data["border_warnings"],
            stages=data["stages"],
            study=data.get("study", {}),
            advice=data.get("advice", []),
        )


def _state(trial: FrozenTrial) -> str:
    if is_lost(trial):
        return "lost"
    return "diverged" if trial.user_attrs.get("diverged") else _STATES.get(trial.state, "failed")


def trial_record(trial: FrozenTrial, space: Mapping[str, Dimension]) -> dict[str, Any]:
    """One trial as plain data: number, stage, state, params, value, and where it ran."""
    attrs = trial.user_attrs
    value = trial.value if trial.value is not None else json_restore(attrs.get("last_score"))
    params = {key: space[key].decode(v) if key in space else v for key, v in trial.params.items()}
    start, end = trial.datetime_start, trial.datetime_complete
    record: dict[str, Any] = {
        "number": trial.number,
        "stage": attrs.get("stage"),
        "state": _state(trial),
        "params": params,
        "value": value,
        "seconds": (end - start).total_seconds() if start and end else None,
    }
    record |= {k: attrs[k] for k in ("epochs", "dir", "error", LOST_WITH, *PBT_ATTRS) if k in attrs}
    if "failed_trial" in trial.system_attrs:
        record["retry_of"] = trial.system_attrs["failed_trial"]
    return record


def best_of(trials: Sequence[Mapping[str, Any]], *, direction: str) -> dict[str, Any]:
    """``{params, value, trial}`` of the best complete trial of the latest stage that has one.

    Later stages train longer, so their scores are the ones to compare (a 1-epoch score
    from a coarse stage is not comparable with a 20-epoch one).
    """
    complete = [t for t in trials if t["state"] == "complete"]
    if not complete:
        return {"params": None, "value": None, "trial": None}
    last = max(t["stage"] or 0 for t in complete)
    pool = [t for t in complete if (t["stage"] or 0) == last]
    sign = 1.0 if direction == "max" else -1.0
    best = max(pool, key=lambda t: sign * t["value"])
    out = {"params": best["params"], "value": best["value"], "trial": best["number"]}
    return out | ({"final_params": best["final_params"]} if "final_params" in best else {})


def advice_for(
    trials: Sequence[Mapping[str, Any]], stages: Sequence[Mapping[str, Any]]
) -> list[str]:
    """What to change when every trial that ended diverged (none complete, pruned or
    failed): lower the learning rate's range, the usual cause (cs231n: a loss that
    explodes means the lr is too high). Empty otherwise."""
    ended = {t["state"] for t in trials} - {"lost", "running", "waiting"}
    if ended != {"diverged"}:
        return []
    ranges: Mapping[str, str] = stages[-1].get("ranges", {}) if stages else {}
    lr = next((key for key in ranges if key.rpartition(".")[2] == "lr"), None)
    if lr is None:
        return [
            "every trial diverged: lower optim.lr, or search it with an upper bound below it "
            '(e.g. "optim.lr" = "loguniform(1e-6, 1e-2)" under [search.space])'
        ]
    return [
        f'every trial diverged: lower the upper bound of search.space "{lr}" '
        f"(searched {ranges[lr]})"
    ]


def summarize(
    study: optuna.Study,
    space: Mapping[str, Dimension],
    *,
    directory: Path,
    stages: list[dict[str, Any]],
    warnings: list[dict[str, Any]],
    info: Mapping[str, Any],
) -> Study:
    """The :class:`Study` of a finished search: every trial, each stage's counts, the best."""
    trials = [trial_record(t, space) for t in study.get_trials(deepcopy=False)]
    for s, record in enumerate(stages):
        states = [t["state"] for t in trials if t["stage"] == s]
        record["counts"] = {state: states.count(state) for state in sorted(set(states))}
    return Study(
        dir=directory,
        best=best_of(trials, direction=info["direction"]),
        trials=trials,
        border_warnings=warnings,
        stages=stages,
        study={"name": study.study_name} | {k: info[k] for k in ("storage", "metric", "direction")},
        advice=advice_for(trials, stages),
    )
