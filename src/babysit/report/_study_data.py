"""Read a study dir for its page: summary.json, the top trials' curves, ensemble.json.

``summary.json`` is read by :meth:`babysit.tuning.summary.Study.from_dir` (its one reader)
and checked here: a file that is not a study summary raises :class:`ReportError` (one
line) before anything is written. Everything else in the dir is optional and untrusted: a
malformed trial record is left out and counted, a trial whose run dir cannot be read
loses its curve with a note, a bad ``ensemble.json`` gives its section a note.

Memory is bounded for studies of any size: the summary holds one small record per trial,
and only the top :data:`TOP_CURVES` trials' metrics.jsonl are read (each streamed and
downsampled by :func:`~babysit.report._run_data.load_run`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from babysit.report._page import ReportError
from babysit.report._run_data import json_number, load_run
from babysit.report._series import Series
from babysit.report._study_ensemble import ENSEMBLE_FILE, EnsembleData, read_ensemble
from babysit.tuning.dimensions import Dimension, parse_dimension
from babysit.tuning.summary import SUMMARY_FILE, Study

__all__ = [
    "TOP_CURVES",
    "Curve",
    "StageRow",
    "StudyData",
    "TrialRow",
    "is_study_dir",
    "load_study",
    "ranked",
    "top_trials",
]

TOP_CURVES = 8  # trials whose metrics.jsonl is read for the loss curves
MAX_RANGE_TEXT = 1000  # longer range strings are not parsed (untrusted input)


@dataclass(frozen=True)
class TrialRow:
    """One trial record of summary.json, checked; ``value`` NaN: the score was NaN/inf."""

    number: int
    stage: int | None
    state: str  # complete | pruned | diverged | failed | running | waiting
    params: dict[str, Any]
    value: float | None
    epochs: float | None
    dir: Path | None  # the trial's run dir, only when it lies inside the study dir
    error: str | None = None

    @property
    def score(self) -> float | None:
        """The value when it is finite (a score to rank and draw), else None."""
        return self.value if self.value is not None and math.isfinite(self.value) else None


@dataclass(frozen=True)
class StageRow:
    """One coarse -> fine stage: its budget, counts and each param's range."""

    epochs: float | None
    trials: int | None
    counts: dict[str, int]
    ranges: dict[str, str]  # param -> distribution string, as written in the config
    dims: dict[str, Dimension]  # the ranges that parse


@dataclass(frozen=True)
class Curve:
    """A top trial's losses: its minibatch loss and its per-epoch validation series."""

    trial: TrialRow
    loss: Series | None  # minibatch data loss (or total loss), x in epochs when logged
    loss_name: str
    val: dict[str, Series]  # val_loss, val_<metric>, by epoch


@dataclass
class StudyData:
    """What the study page shows; the optional parts may be empty."""

    dir: Path
    study: Study  # summary.json as read
    name: str
    metric: str  # the score's name, e.g. "val_acc" ("value" for a user's objective)
    direction: Literal["max", "min"]
    params: list[str]  # searched params, in the order of the first stage's ranges
    trials: list[TrialRow]  # best first (see :func:`ranked`)
    stages: list[StageRow]
    warnings: list[dict[str, Any]]  # border warnings, checked
    skipped: int = 0  # trial or warning records of summary.json that were malformed
    curves: list[Curve] = field(default_factory=list)
    curve_notes: list[str] = field(default_factory=list)  # trials whose curves were not read
    ensemble: EnsembleData | None = None
    ensemble_note: str | None = None  # why ensemble.json was not shown

    @property
    def best_number(self) -> int | None:
        """The best trial's number (None: no trial completed)."""
        return _int(self.study.best.get("trial"))


def is_study_dir(path: Path) -> bool:
    return (path / SUMMARY_FILE).is_file()


def _int(value: Any) -> int | None:
    return value if type(value) is int else None


def _trial_dir(root: Path, text: Any) -> Path | None:
    """``root / text`` if it is a directory inside ``root`` (a summary may say anything)."""
    if not isinstance(text, str) or not text:
        return None
    path = root / text
    try:
        inside = path.resolve().is_relative_to(root.resolve())
    except (OSError, ValueError):
        return None
    return path if inside and path.is_dir() else None


def _trial(root: Path, record: Any) -> TrialRow | None:
    if not isinstance(record, dict) or _int(record.get("number")) is None:
        return None
    params = record.get("params")
    error = record.get("error")
    return TrialRow(
        number=record["number"],
        stage=_int(record.get("stage")),
        state=str(record.get("state", "failed")),
        params={str(k): v for k, v in params.items()} if isinstance(params, dict) else {},
        value=json_number(record.get("value")),
        epochs=json_number(record.get("epochs")),
        dir=_trial_dir(root, record.get("dir")),
        error=str(error) if error is not None else None,
    )


def _dimension(text: str) -> Dimension | None:
    if len(text) > MAX_RANGE_TEXT:
        return None
    try:
        return parse_dimension(text)
    except (ValueError, RecursionError):
        return None


def _stage(record: Any) -> StageRow | None:
    if not isinstance(record, dict):
        return None
    ranges = record.get("ranges")
    texts = {str(k): str(v) for k, v in ranges.items()} if isinstance(ranges, dict) else {}
    counts = record.get("counts")
    dims = {k: d for k, text in texts.items() if (d := _dimension(text)) is not None}
    return StageRow(
        epochs=json_number(record.get("epochs")),
        trials=_int(record.get("trials")),
        counts={str(k): v for k, v in counts.items() if _int(v) is not None}
        if isinstance(counts, dict)
        else {},
        ranges=texts,
        dims=dims,
    )


def ranked(trials: Sequence[TrialRow], direction: str) -> list[TrialRow]:
    """Best value first (``direction`` max or min); unscored trials last; ties by number."""
    sign = -1.0 if direction == "max" else 1.0

    def key(t: TrialRow) -> tuple[int, float, int]:
        score = t.score
        return (0, sign * score, t.number) if score is not None else (1, 0.0, t.number)

    return sorted(trials, key=key)


SHAPES = {"best": dict, "stages": list, "border_warnings": list, "trials": list, "study": dict}


def _read_summary(root: Path) -> Study:
    """summary.json through Study.from_dir (its one reader), its shape checked."""
    where = root / SUMMARY_FILE
    if not where.is_file():
        raise ReportError(f"{root}: no {SUMMARY_FILE}; is this a study dir (babysit search)?")
    expected = f"expected a JSON object with {', '.join(SHAPES)}; babysit search writes it"
    try:
        study = Study.from_dir(root)
    except (KeyError, TypeError, AttributeError, RecursionError):  # JSON, not a summary
        raise ReportError(f"{where}: not a study summary: {expected}") from None
    for key, kind in SHAPES.items():
        if not isinstance(getattr(study, key), kind):
            what = "an object" if kind is dict else "a list"
            raise ReportError(f"{where}: {key!r} is not {what}: {expected}")
    return study


def load_study(study_dir: str | Path) -> StudyData:
    """Read a study dir (summary.json required; trial dirs and ensemble.json optional)."""
    root = Path(study_dir)
    if not root.is_dir():
        raise ReportError(f"{root}: not a directory; pass the study dir that holds {SUMMARY_FILE}")
    study = _read_summary(root)
    info = study.study
    direction: Literal["max", "min"] = "min" if info.get("direction") == "min" else "max"
    metric = str(info.get("metric", "value"))
    trials = [t for r in study.trials if (t := _trial(root, r)) is not None]
    stages = [s for r in study.stages if (s := _stage(r)) is not None]
    warnings = [w for w in study.border_warnings if isinstance(w, dict) and "param" in w]
    skipped = (len(study.trials) - len(trials)) + (len(study.border_warnings) - len(warnings))
    data = StudyData(
        dir=root,
        study=study,
        name=str(info.get("name", root.resolve().name)),
        metric=metric if metric == "value" else f"val_{metric}",
        direction=direction,
        params=_params(stages, trials),
        trials=ranked(trials, direction),
        stages=stages,
        warnings=warnings,
        skipped=skipped + len(study.stages) - len(stages),
    )
    _read_curves(data)
    data.ensemble, data.ensemble_note = read_ensemble(root / ENSEMBLE_FILE)
    return data


def _params(stages: Sequence[StageRow], trials: Sequence[TrialRow]) -> list[str]:
    """The searched params: every stage's range keys, then any other key a trial set."""
    names: dict[str, None] = {}
    for stage in stages:
        names |= dict.fromkeys(stage.ranges)
    for trial in trials:
        names |= dict.fromkeys(trial.params)
    return list(names)


def top_trials(data: StudyData, n: int = TOP_CURVES) -> list[TrialRow]:
    """Up to ``n`` scored trials with a run dir: the summary's best first, then by rank."""
    pool = [t for t in data.trials if t.score is not None and t.dir is not None]
    pool.sort(key=lambda t: t.number != data.best_number)  # stable: the rest keep their rank
    return pool[:n]


def _read_curves(data: StudyData) -> None:
    for trial in top_trials(data):
        assert trial.dir is not None
        try:
            run = load_run(trial.dir)
        except (ValueError, OSError, RecursionError) as exc:  # ReportError, bytes not UTF-8
            data.curve_notes.append(f"trial {trial.number}: {exc}")
            continue
        name = "data_loss" if "data_loss" in run.batch else "loss"
        val = {k: s for k, s in run.epochs.items() if k in ("val_loss", data.metric)}
        if "metrics.jsonl" in run.skipped:  # its broken lines were left out: say so
            data.curve_notes.append(
                f"trial {trial.number}: metrics.jsonl: {run.skipped['metrics.jsonl']}"
            )
            if name not in run.batch and not val:
                continue  # nothing of it could be read
        data.curves.append(Curve(trial, run.batch.get(name), name, val))
