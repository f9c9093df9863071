"""What an ensemble command leaves: the :class:`Ensemble` and its ``ensemble.json``.

``ensemble.json`` (DESIGN.md fixes the first two keys)::

    members     [{path, val_acc, test_acc, val_loss, test_loss, source, run}]
    ensemble    {val_acc, test_acc, val_loss, test_loss}
    average     "probs" | "logits"
    mean_member {val_acc, ...}: the members' mean
    gain        {val_acc, ...}: ensemble minus mean member (accuracy up, loss down: better)
    by_size     [{size, val_acc, test_acc, val_loss, test_loss}]: the ensemble of the first
                ``size`` members, added best-first by validation accuracy
    distill     {temperature, alpha, config, students: {distilled, labels}} (with --distill;
                each student {dir, val_acc, test_acc, val_loss, test_loss})
    notes       what happened on the way (seeds left out, members run one by one)

Paths are relative to the ensemble dir when inside it, else absolute. A split the task
does not have (no test split) gives None scores. Accuracies are fractions in [0, 1].
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from babysit._io import write_json_atomic
from babysit.report._study_ensemble import ENSEMBLE_BY_SIZE, ENSEMBLE_FILE

__all__ = ["ENSEMBLE_FILE", "KEYS", "Ensemble", "MemberScore", "Scores", "relative"]

KEYS = ("val_acc", "test_acc", "val_loss", "test_loss")
Scores = dict[str, float | None]  # the four KEYS


def relative(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` when inside it, else absolute (POSIX separators)."""
    path, root = path.resolve(), root.resolve()
    return (path.relative_to(root) if path.is_relative_to(root) else path).as_posix()


@dataclass(frozen=True)
class MemberScore:
    """One member's checkpoint, where it came from, and its scores alone."""

    path: Path
    run_dir: Path
    source: str  # "study" | "run" | "seeds" | "member"
    scores: Scores

    def to_dict(self, root: Path) -> dict[str, Any]:
        return {
            "path": relative(self.path, root),
            **self.scores,
            "source": self.source,
            "run": relative(self.run_dir, root),
        }


def _mean(rows: list[Scores]) -> Scores:
    out: Scores = {}
    for key in KEYS:
        values = [r[key] for r in rows if r.get(key) is not None]
        out[key] = statistics.fmean(v for v in values if v is not None) if values else None
    return out


def _diff(a: Scores, b: Scores) -> Scores:
    out: Scores = {}
    for key in KEYS:
        x, y = a.get(key), b.get(key)
        out[key] = None if x is None or y is None else x - y
    return out


@dataclass
class Ensemble:
    """An evaluated ensemble; ``ensemble.json`` in ``dir`` holds the same."""

    dir: Path
    members: list[MemberScore]
    scores: Scores  # the ensemble's val_acc, test_acc, val_loss, test_loss
    average: str = "probs"
    by_size: list[dict[str, Any]] = field(default_factory=list)
    distill: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    report: Path | None = field(default=None, compare=False)

    @property
    def val_acc(self) -> float | None:
        return self.scores["val_acc"]

    @property
    def test_acc(self) -> float | None:
        return self.scores["test_acc"]

    @property
    def mean_member(self) -> Scores:
        return _mean([m.scores for m in self.members])

    @property
    def gain(self) -> Scores:
        """The ensemble minus the mean member: the notes' reason to ensemble."""
        return _diff(self.scores, self.mean_member)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "members": [m.to_dict(self.dir) for m in self.members],
            "ensemble": dict(self.scores),
            "average": self.average,
            "mean_member": self.mean_member,
            "gain": self.gain,
            ENSEMBLE_BY_SIZE: self.by_size,
        }
        if self.distill is not None:
            data["distill"] = self.distill
        data["notes"] = self.notes
        return data

    def write(self) -> Path:
        return write_json_atomic(self.dir / ENSEMBLE_FILE, self.to_dict())

    def rows(self) -> tuple[list[str], list[list[str]]]:
        """The table the command line prints: members, mean, ensemble, gain, students."""
        head = ["", "source", *KEYS]

        def row(name: str, source: str, scores: Scores, sign: bool = False) -> list[str]:
            spec = "+.4f" if sign else ".4f"
            return [
                name,
                source,
                *("-" if scores.get(k) is None else format(scores[k], spec) for k in KEYS),
            ]

        rows = [row(self._shown(m.path), m.source, m.scores) for m in self.members]
        rows.append(row("mean member", "", self.mean_member))
        rows.append(row(f"ensemble of {len(self.members)} ({self.average})", "", self.scores))
        rows.append(row("gain over the mean member", "", self.gain, sign=True))
        if self.distill is not None:
            d = self.distill
            for name, label in (("distilled", "distilled student"), ("labels", "labels only")):
                student = d["students"][name]
                rows.append(row(f"{label} ({student['dir']})", "student", student))
        return head, rows

    def _shown(self, path: Path) -> str:
        """A path as printed: inside the ensemble dir, else from the current directory."""
        inside = path.resolve().is_relative_to(self.dir.resolve())
        return relative(path, self.dir if inside else Path.cwd())

    def __str__(self) -> str:
        head, rows = self.rows()
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
        lines = [
            "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
            for r in [head, *rows]
        ]
        if self.distill is not None:
            lines.append(
                f"distillation: T = {self.distill['temperature']:g}, "
                f"alpha = {self.distill['alpha']:g} (student config {self.distill['config']})"
            )
        return "\n".join(lines)


def student_scores(run_dir: Path, root: Path, scores: Scores) -> dict[str, Any]:
    return {"dir": relative(run_dir, root), **scores}
