"""The ensemble page: what ``babysit ensemble`` wrote in an ensemble dir's ``ensemble.json``.

Top to bottom: the ensemble's validation and test accuracy and loss beside the mean
member's (the gain is the notes' reason to ensemble), every member with its scores alone,
accuracy against the number of members (members added best-first by validation
accuracy: the returns diminish), and the distilled student against the ensemble and a
student trained on the labels only. A study dir's ensemble is drawn on the study page
instead (same parts, ``_study_ensemble``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from babysit.errors import ReportError
from babysit.report._page import Part, get_page
from babysit.report._study_ensemble import (
    ENSEMBLE_FILE,
    EnsembleData,
    distill_parts,
    member_parts,
    read_ensemble,
    score_parts,
    size_parts,
)

__all__ = ["ENSEMBLE", "EnsemblePageData", "is_ensemble_dir", "load_ensemble"]

ENSEMBLE = get_page("ensemble")


@dataclass(frozen=True)
class EnsemblePageData:
    dir: Path
    ensemble: EnsembleData


def is_ensemble_dir(path: Path) -> bool:
    return (path / ENSEMBLE_FILE).is_file()


def load_ensemble(directory: Path) -> EnsemblePageData:
    """Read ``ensemble.json`` (required here: ReportError, one line, when missing or bad)."""
    if not directory.is_dir():
        raise ReportError(f"{directory}: not a directory")
    data, why = read_ensemble(directory / ENSEMBLE_FILE)
    if data is None:
        raise ReportError(why or f"{directory}: no {ENSEMBLE_FILE} (babysit ensemble writes it)")
    return EnsemblePageData(directory, data)


@ENSEMBLE.section("ensemble", title="Ensemble")
def ensemble_section(data: EnsemblePageData) -> list[Part]:
    return score_parts(data.ensemble)


@ENSEMBLE.section("members", title="Members")
def members_section(data: EnsemblePageData) -> list[Part]:
    return member_parts(data.ensemble)


@ENSEMBLE.section("size", title="Accuracy against ensemble size")
def size_section(data: EnsemblePageData) -> list[Part]:
    return size_parts(data.ensemble)


@ENSEMBLE.section("distill", title="Distillation")
def distill_section(data: EnsemblePageData) -> list[Part]:
    return distill_parts(data.ensemble)
