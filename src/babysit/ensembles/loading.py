"""Members loaded: each run's config builds its task and model, the checkpoint fills the model.

A checkpoint is read with ``torch.load(weights_only=True)`` and must be a dict whose
``"model"`` entry is a state_dict (a regular checkpoint, an EMA/SWA one, a population
member's); it is loaded strictly into the model its run's ``config.toml`` builds. Runs
that name the same ``[task]`` table (name, data_dir, options) share one Task, built once.

An ensemble averages class probabilities on one task's data, so its members must share
the task and the number of classes (the last dimension of a model's (N, classes) output,
measured on two validation examples). Every problem is one line, raised before anything
is computed: CheckpointError (missing, unreadable, not fitting the model), ConfigError
(a bad config.toml, members of different tasks or class counts).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from babysit.config import Config, load_config
from babysit.ensembles.members import MemberSpec
from babysit.errors import CheckpointError, ConfigError
from babysit.splits import first
from babysit.tasks import Task, task_for

__all__ = ["Loaded", "MemberLoader", "num_classes", "read_state"]


def read_state(path: Path) -> dict[str, Any]:
    """The ``"model"`` state_dict of a checkpoint file (safe loader), else CheckpointError."""
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds for a bad file
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(f"{path}: cannot load the checkpoint ({first_line})") from None
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise CheckpointError(f"{path}: not a babysit checkpoint (no 'model' state_dict in it)")
    return state["model"]


@dataclass(frozen=True)
class Loaded:
    """A member ready to predict: its model (eval mode, CPU) and its task."""

    spec: MemberSpec
    model: nn.Module
    task: Task
    task_key: str  # the run's [task] table as text ("<given>" for a Task given in Python)


class MemberLoader:
    """Builds members' models from their runs' configs; tasks and configs read once each."""

    def __init__(self, task: Task | None = None) -> None:
        self.given = task  # a Task from Python: every member uses it
        self._configs: dict[Path, Config] = {}
        self._tasks: dict[str, Task] = {}

    def config(self, run_dir: Path) -> Config:
        key = run_dir.resolve()
        if key not in self._configs:
            self._configs[key] = load_config(run_dir / "config.toml")
        return self._configs[key]

    def task_key(self, config: Config) -> str:
        if self.given is not None:
            return "<given>"
        return json.dumps(config.task.model_dump(mode="json"), sort_keys=True)

    def task(self, config: Config) -> Task:
        if self.given is not None:
            return self.given
        key = self.task_key(config)
        if key not in self._tasks:
            self._tasks[key] = task_for(config)
        return self._tasks[key]

    def direction(self, run_dir: Path) -> str:
        """The run's task's direction: "max" (a score such as acc) or "min" (a loss)."""
        return self.task(self.config(run_dir)).direction

    def load(self, spec: MemberSpec) -> Loaded:
        """Build the member's model from its run's config and load its checkpoint into it."""
        config = self.config(spec.run_dir)
        task = self.task(config)
        state = read_state(spec.path)
        model = task.model_factory(config.model_table())
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            first_line = (str(exc).strip().splitlines() or ["mismatch"])[0]
            raise CheckpointError(
                f"{spec.path}: does not fit the model {spec.run_dir / 'config.toml'} builds "
                f"({first_line})"
            ) from None
        return Loaded(spec, model.eval(), task, self.task_key(config))


def num_classes(model: nn.Module, task: Task, where: str) -> int:
    """Classes a model scores: the C of its (N, C) output on two validation examples."""
    x, _ = first(task.val, 2, name="val").read()
    param = next(model.parameters(), None)
    if param is not None:
        x = x.to(param.device)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = model(x)
    model.train(was_training)
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError(
            f"{where}: the model outputs {shape}; an ensemble averages class scores, so each "
            "member must output (examples, classes)"
        )
    return int(out.shape[1])


def check_compatible(members: Sequence[Loaded], extra: Sequence[tuple[str, str, int]] = ()) -> int:
    """The members' common number of classes; ConfigError if tasks or class counts differ.

    extra: (where, task key, classes) of members still to be trained (seeds), checked too.
    """
    rows = [
        (str(m.spec.path), m.task_key, num_classes(m.model, m.task, str(m.spec.path)))
        for m in members
    ]
    rows += list(extra)
    if not rows:
        raise ConfigError("no members: give --from-study, --from-run, --seeds or member paths")
    where0, key0, classes0 = rows[0]
    for where, key, classes in rows[1:]:
        if key != key0:
            raise ConfigError(
                f"members of different tasks: {where} has [task] {key}, {where0} has {key0}; "
                "an ensemble averages predictions on one task's data"
            )
        if classes != classes0:
            raise ConfigError(
                f"members with different numbers of classes: {where} scores {classes}, "
                f"{where0} scores {classes0}"
            )
    return classes0
