"""Distillation: the loss against its formula in float64, its gradient, the student config,
and the trainer with the distillation loss against the plain trainer."""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from babysit.ensembles.distill import (
    DistillConfig,
    DistillTrainer,
    distill_loss,
    load_student_config,
)
from babysit.ensembles.predict import Predictor
from babysit.errors import ConfigError
from babysit.tasks import Task
from babysit.training.checkpoint import list_checkpoints
from babysit.training.run import train


def _hand(
    z: list[list[float]], q: list[list[float]], y: list[int], t: float, alpha: float
) -> float:
    """alpha T^2 (1/B) sum_b sum_c q log(q / p_T) + (1 - alpha) (1/B) sum_b -log p_y."""
    total_kl, total_ce = 0.0, 0.0
    for zb, qb, yb in zip(z, q, y, strict=True):
        e = [math.exp(v / t) for v in zb]
        p_t = [v / sum(e) for v in e]
        total_kl += sum(qc * math.log(qc / pc) for qc, pc in zip(qb, p_t, strict=True))
        e1 = [math.exp(v) for v in zb]
        total_ce += -math.log(e1[yb] / sum(e1))
    b = len(z)
    return alpha * t * t * total_kl / b + (1 - alpha) * total_ce / b


@pytest.mark.parametrize(("t", "alpha"), [(1.0, 0.5), (4.0, 0.9), (2.5, 0.0), (3.0, 1.0)])
def test_distillation_loss_matches_the_formula_in_float64(t: float, alpha: float) -> None:
    g = torch.Generator().manual_seed(0)
    z = torch.randn(5, 4, generator=g, dtype=torch.float64) * 3
    q = torch.softmax(torch.randn(5, 4, generator=g, dtype=torch.float64), -1)
    y = torch.randint(0, 4, (5,), generator=g)
    got = distill_loss(z, y, q.log(), temperature=t, alpha=alpha)
    assert got.item() == pytest.approx(
        _hand(z.tolist(), q.tolist(), y.tolist(), t, alpha), rel=1e-12
    )


def test_the_soft_terms_gradient_is_t_times_student_minus_teacher() -> None:
    """d/dz [T^2 KL(q || softmax(z/T))] = T (softmax(z/T) - q) / B: the T^2 keeps it O(1)."""
    g = torch.Generator().manual_seed(1)
    z = torch.randn(3, 5, generator=g, dtype=torch.float64, requires_grad=True)
    q = torch.softmax(torch.randn(3, 5, generator=g, dtype=torch.float64), -1)
    t = 4.0
    distill_loss(z, torch.zeros(3, dtype=torch.long), q.log(), temperature=t, alpha=1.0).backward()
    expected = t * (torch.softmax(z.detach() / t, -1) - q) / 3
    assert z.grad is not None and torch.allclose(z.grad, expected, atol=1e-14)


def test_student_config_reads_its_distill_table_and_flags_override_it(tmp_path: Path) -> None:
    path = tmp_path / "student.toml"
    path.write_text("[model]\nhidden = [16]\n[distill]\ntemperature = 2.0\nalpha = 0.5\n")
    config, table = load_student_config(path)
    assert config.model_table() == {"hidden": [16]}
    assert table == DistillConfig(temperature=2.0, alpha=0.5)
    _, table = load_student_config(path, alpha=0.25)
    assert table == DistillConfig(temperature=2.0, alpha=0.25)
    _, table = load_student_config({"model": {"hidden": [4]}})
    assert table == DistillConfig(temperature=4.0, alpha=0.9)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("[distill]\ntemperature = 0\n", r"distill.temperature = 0 is invalid"),
        ("[distill]\nalpha = 1.5\n", r"distill.alpha = 1.5 is invalid"),
        ("[distill]\ntemprature = 2\n", r"distill.temprature"),
        ("distill = 3\n", r"\[distill\] must be a table"),
        ("[optim]\nlr = -1\n", r"optim.lr = -1 is invalid"),
        ("[distill\n", r"cannot read the student config"),
    ],
)
def test_a_bad_student_config_is_one_config_error(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "student.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match) as info:
        load_student_config(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_a_missing_student_config_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope.toml: config file not found"):
        load_student_config(tmp_path / "nope.toml")


def _task() -> Task:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(96, 6, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()

    def factory(cfg: dict[str, Any]) -> nn.Module:
        return nn.Sequential(nn.Linear(6, cfg.get("hidden", 8)), nn.ReLU(), nn.Linear(8, 3))

    return Task(factory, (x[:64], y[:64]), (x[64:], y[64:]), F.cross_entropy, num_classes=3)


CONFIG = {
    "optim": {"rule": "adam", "lr": 1e-2},
    "train": {"epochs": 2, "batch_size": 16, "seed": 3, "report": False},
}


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    last = list_checkpoints(run_dir / "checkpoints")[-1].path
    return torch.load(last, weights_only=True)["model"]  # type: ignore[no-any-return]


def _student(tmp_path: Path, name: str, alpha: float) -> dict[str, torch.Tensor]:
    task = _task()
    torch.manual_seed(9)
    teachers = [nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3)) for _ in range(2)]
    factory = partial(
        DistillTrainer,
        teacher=Predictor(teachers, torch.device("cpu")),
        average="probs",
        distill=DistillConfig(temperature=3.0, alpha=alpha),
    )
    train(CONFIG, task=task, out=tmp_path / name, quiet=True, trainer_factory=factory)
    return _weights(tmp_path / name)


def test_a_student_with_alpha_0_trains_exactly_as_on_the_labels(tmp_path: Path) -> None:
    train(CONFIG, task=_task(), out=tmp_path / "labels", quiet=True)
    plain = _weights(tmp_path / "labels")
    zero = _student(tmp_path, "alpha0", 0.0)
    soft = _student(tmp_path, "alpha09", 0.9)
    assert all(torch.allclose(plain[k], zero[k], atol=1e-6) for k in plain)
    assert any(not torch.allclose(plain[k], soft[k], atol=1e-3) for k in plain)
