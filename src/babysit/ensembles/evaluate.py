"""Scores: each member alone, the ensemble, and the ensemble as it grows member by member.

From every member's outputs on the validation and test splits (``predict.collect``), all
numbers are computed without running a model again:

    members   each member's accuracy and loss alone (its own outputs)
    ensemble  the average of all M members (``predict.AVERAGES``)
    by_size   the average of the best k members, k = 1..M, members ranked by validation
              accuracy (ties: lower validation loss, then their order): the notes' "the
              performance typically monotonically improves (though with diminishing
              returns)" measured; the test split never chooses anything
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from babysit.ensembles.loading import Loaded
from babysit.ensembles.predict import Outputs, Predictor, average, collect, scores
from babysit.ensembles.result import MemberScore, Scores
from babysit.tasks import Task

__all__ = ["evaluate_members", "evaluate_model", "split_scores"]


def split_scores(val: Outputs | None, test: Outputs | None, task: Task, how: str) -> Scores:
    """val_acc, val_loss, test_acc, test_loss of the average of the outputs given (None for
    a split the task does not have)."""
    out: Scores = {}
    for split, data in (("val", val), ("test", test)):
        s = scores(average(data.outputs, how), data.targets, task.loss_fn) if data else None
        out[f"{split}_acc"] = None if s is None else s["acc"]
        out[f"{split}_loss"] = None if s is None else s["loss"]
    return out


def _outputs(predictor: Predictor, task: Task, batch: int) -> tuple[Outputs, Outputs | None]:
    val = collect(predictor, task.val, batch, "val")
    test = None if task.test is None else collect(predictor, task.test, batch, "test")
    return val, test


def _rows(data: Outputs | None, rows: Sequence[int]) -> Outputs | None:
    return None if data is None else Outputs(data.outputs[list(rows)], data.targets)


def evaluate_members(
    loaded: Sequence[Loaded], predictor: Predictor, how: str, batch: int
) -> tuple[list[MemberScore], Scores, list[dict[str, Any]]]:
    """(each member's scores, the ensemble's, by_size) on the members' shared task."""
    task = loaded[0].task
    val, test = _outputs(predictor, task, batch)
    members = [  # alone, a member's own outputs ("logits": the mean of one is itself)
        MemberScore(
            m.spec.path,
            m.spec.run_dir,
            m.spec.source,
            split_scores(_rows(val, [i]), _rows(test, [i]), task, "logits"),
        )
        for i, m in enumerate(loaded)
    ]
    order = sorted(
        range(len(members)),
        key=lambda i: (-(members[i].scores["val_acc"] or 0.0), members[i].scores["val_loss"], i),
    )
    by_size = [
        {"size": k, **split_scores(_rows(val, order[:k]), _rows(test, order[:k]), task, how)}
        for k in range(1, len(order) + 1)
    ]
    return members, split_scores(val, test, task, how), by_size


def evaluate_model(model: nn.Module, task: Task, device: torch.device, batch: int) -> Scores:
    """One model's four scores (a student), computed as a member's."""
    val, test = _outputs(Predictor([model], device), task, batch)
    return split_scores(val, test, task, "logits")
