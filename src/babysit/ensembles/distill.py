"""Distillation ("Dark Knowledge", Hinton et al. 2015): one student learns from the ensemble.

The notes: an ensemble is slow to evaluate; distil it back into one model by putting the
ensemble's predictions into the student's objective. Per minibatch, with the student's
scores z, the ensemble's softened distribution q_T = softmax(average(z_m / T)) (see
``predict.soft_targets``; "probs": the mean of the members' softened probabilities) and
the true labels y:

    loss = alpha * T^2 * KL(q_T || softmax(z / T)) + (1 - alpha) * loss_fn(z, y)

KL summed over classes, averaged over the batch; T^2 keeps the soft term's gradients on
the scale of the hard term's as T grows (its gradient scales as 1/T^2); loss_fn is the
task's (cross-entropy). The student config is a normal run config plus an optional table
(flags ``--temperature`` / ``--alpha`` override it)::

    [distill]
    temperature = 4.0    # T > 0; higher: softer targets, more of the "dark knowledge"
    alpha = 0.9          # weight of the soft term in [0, 1]; 0: labels only

The student trains with the trainer (monitor, checkpoints, report: a run dir like any
other), the loss above in place of the task's; the teacher predicts on the student's own
minibatch (so augmented inputs get their own soft targets). Beside it, a student of the
same config and seed trains on the labels alone: the baseline that says what the soft
targets bought. Both: ``<out>/students/distilled/`` and ``<out>/students/labels/``.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import Tensor

from babysit.config import Config, load_config
from babysit.ensembles.predict import Predictor, soft_targets
from babysit.errors import ConfigError
from babysit.tasks import Task
from babysit.training.rundir import check_new_run_dir
from babysit.training.trainer import Trainer

__all__ = [
    "STUDENTS_DIR",
    "DistillConfig",
    "DistillTrainer",
    "check_students",
    "distill_loss",
    "load_student_config",
    "train_students",
]

STUDENTS_DIR = "students"
STUDENTS = ("distilled", "labels")  # the distilled student, the labels-only one


class DistillConfig(BaseModel):
    """The ``[distill]`` table of a student config."""

    model_config = ConfigDict(extra="forbid")
    temperature: float = Field(4.0, gt=0)  # Hinton et al.: T in 2..20; 4 is a common choice
    alpha: float = Field(0.9, ge=0, le=1)  # weight of the soft targets' term


def load_student_config(
    source: str | os.PathLike[str] | Mapping[str, Any] | Config,
    *,
    temperature: float | None = None,
    alpha: float | None = None,
) -> tuple[Config, DistillConfig]:
    """The student's run config and its [distill] table (flags win); ConfigError, one line."""
    table: dict[str, Any] = {}
    if isinstance(source, Config):
        config, name = source, "<config>"
    else:
        if isinstance(source, Mapping):
            data, name = dict(source), "<dict>"
        else:
            path, name = Path(source), str(source)
            if not path.is_file():
                load_config(path)  # raises its one line: not found, a directory
            try:
                data = tomllib.loads(path.read_text(encoding="utf-8"))
            except (tomllib.TOMLDecodeError, OSError, UnicodeDecodeError) as exc:
                raise ConfigError(f"{name}: cannot read the student config: {exc}") from None
        table = data.pop("distill", {})
        if not isinstance(table, dict):
            raise ConfigError(f"{name}: [distill] must be a table (temperature, alpha)")
        config = Config.from_dict(data, source=name)
    flags = {"temperature": temperature, "alpha": alpha}
    table = {**table, **{k: v for k, v in flags.items() if v is not None}}
    try:
        return config, DistillConfig.model_validate(table)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        raise ConfigError(
            f"{name}: distill.{key} = {err.get('input')!r} is invalid: {err['msg']} "
            "(temperature > 0, alpha in [0, 1])"
        ) from None


def distill_loss(
    student: Tensor,
    targets: Tensor,
    teacher_log_probs: Tensor,
    *,
    temperature: float,
    alpha: float,
    hard_loss: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy,
) -> Tensor:
    """alpha T^2 KL(q_T || softmax(z/T)) + (1 - alpha) hard_loss(z, y); q_T given as logs.

    student: (B, C) scores z; teacher_log_probs: (B, C) log q_T; targets: (B,) labels.
    """
    log_student = torch.log_softmax(student / temperature, dim=-1)
    kl = F.kl_div(log_student, teacher_log_probs, reduction="batchmean", log_target=True)
    soft = alpha * temperature**2 * kl
    return soft if alpha == 1 else soft + (1 - alpha) * hard_loss(student, targets)


class DistillTrainer(Trainer):
    """The trainer with the distillation loss as the data loss of every training step.

    Validation, checkpoints and the report are the trainer's: the validation loss stays
    the task's own (comparable with any other run), the logged training loss is the
    distillation loss.
    """

    def __init__(
        self,
        *args: Any,
        teacher: Predictor,
        average: str,
        distill: DistillConfig,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.teacher, self.average, self.distill = teacher, average, distill

    def _forward(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        reg = self.config.train.reg
        out = self.model(x)
        with torch.no_grad():
            teacher = soft_targets(self.teacher(x), self.average, self.distill.temperature)
        data_loss = distill_loss(
            out,
            y,
            teacher.to(out.dtype),
            temperature=self.distill.temperature,
            alpha=self.distill.alpha,
            hard_loss=self.task.loss_fn,
        )
        reg_loss = self.task.reg_fn(self.model, reg) if reg > 0 else torch.zeros_like(data_loss)
        return out, data_loss, reg_loss, data_loss + reg_loss


def check_students(out: Path) -> None:
    """Both students' run dirs new, before anything is trained."""
    if (out / STUDENTS_DIR).exists():
        raise ConfigError(
            f"--out {out}: holds {STUDENTS_DIR}/ already (students trained "
            "before); choose a new --out"
        )
    for name in STUDENTS:
        check_new_run_dir(out / STUDENTS_DIR / name)


def train_students(
    config: Config,
    distill: DistillConfig,
    *,
    teacher: Predictor,
    average: str,
    out: Path,
    task: Task,
    device: str,
    quiet: bool,
    say: Callable[[str], None],
) -> dict[str, Path]:
    """Train the distilled student and the labels-only one; their run dirs by name."""
    from babysit.training.run import train

    root = out / STUDENTS_DIR
    say(
        f"distill: training a student on the ensemble's soft targets (T = "
        f"{distill.temperature:g}, alpha = {distill.alpha:g}) -> {root / STUDENTS[0]}"
    )
    factory = partial(DistillTrainer, teacher=teacher, average=average, distill=distill)
    train(
        config,
        task=task,
        out=root / STUDENTS[0],
        device=device,
        quiet=quiet,
        trainer_factory=factory,
    )
    say(f"distill: training the same student on the labels alone -> {root / STUDENTS[1]}")
    train(config, task=task, out=root / STUDENTS[1], device=device, quiet=quiet)
    return {name: root / name for name in STUDENTS}
