"""What a search leaves behind: the :class:`Study` and its ``summary.json``.

``summary.json`` (DESIGN.md) holds ``{best: {params, value, trial}, stages: [{epochs,
trials, ranges}], border_warnings: [{param, side, value, low, high}]}``, plus ``trials``
(one record per trial) and ``study`` (name, storage, metric, direction). ``ranges`` are
distribution strings in the config's syntax, so a stage's ranges can be pasted into a
config. Scores that are NaN/inf are written as strings (babysit's JSON convention).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from babysit._io import json_restore, write_json_atomic
from babysit.errors import ReportError
from babysit.tuning.dimensions import Dimension

__all__ = ["SUMMARY_FILE", "Study", "best_of", "trial_record"]

SUMMARY_FILE = "summary.json"
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

    def to_dict(self) -> dict[str, Any]:
        return {
            "best": self.best,
            "stages": self.stages,
            "border_warnings": self.border_warnings,
            "trials": self.trials,
            "study": self.study,
        }

    def write(self) -> Path:
        return write_json_atomic(self.dir / SUMMARY_FILE, self.to_dict())

    @classmethod
    def from_dir(cls, path: str | os.PathLike[str]) -> Study:
        """Read ``summary.json`` of a study dir."""
        root = Path(path)
        try:
            data = json_restore(json.loads((root / SUMMARY_FILE).read_text(encoding="utf-8")))
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
        )


def trial_record(trial: FrozenTrial, space: Mapping[str, Dimension]) -> dict[str, Any]:
    """One trial as plain data: number, stage, state, params, value, and where it ran."""
    attrs = trial.user_attrs
    state = "diverged" if attrs.get("diverged") else _STATES.get(trial.state, "failed")
    value = trial.value if trial.value is not None else json_restore(attrs.get("last_score"))
    params = {key: space[key].decode(v) if key in space else v for key, v in trial.params.items()}
    record: dict[str, Any] = {
        "number": trial.number,
        "stage": attrs.get("stage"),
        "state": state,
        "params": params,
        "value": value,
    }
    record |= {k: attrs[k] for k in ("epochs", "dir", "error") if k in attrs}
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
    return {"params": best["params"], "value": best["value"], "trial": best["number"]}
