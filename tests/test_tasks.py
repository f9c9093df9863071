"""Task resolution: bundled names, user tasks by module or file, clear errors."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import babysit
from babysit.errors import TaskError
from babysit.tasks import TASKS, get_task, l2_weights

USER_TASK = """
import torch
from torch import nn
import babysit

@babysit.task
def make(width=4):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 3, generator=g)
    y = (x[:, 0] > 0).long()
    return babysit.Task(
        model_factory=lambda cfg: nn.Linear(3, 2),
        train=(x[:30], y[:30]), val=(x[30:], y[30:]),
        loss_fn=nn.functional.cross_entropy, num_classes=2,
    )
"""

DECLARED = "import babysit\n@babysit.task\n"


def test_l2_weights_skips_biases() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    expected = sum(float((m.weight.detach() ** 2).sum()) for m in (model[0], model[2]))
    assert l2_weights(model, 0.5).item() == pytest.approx(0.5 * expected)


@pytest.mark.parametrize("name", ["digits-softmax", "digits-mlp", "digits-convnet", "spiral-mlp"])
def test_bundled_models_start_at_chance(name: str) -> None:
    task = get_task(name)
    torch.manual_seed(0)
    model = task.model_factory({})
    x, y = task.train
    loss = task.loss_fn(model(x), y).item()
    assert loss == pytest.approx(math.log(task.num_classes), rel=0.02)  # the notes: ln(10)


def test_cifar_needs_a_data_dir() -> None:
    with pytest.raises(babysit.errors.DataError, match="data_dir"):
        get_task("cifar10-convnet")


def test_user_task_from_file_and_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "usertask_mod.py").write_text(USER_TASK)
    monkeypatch.chdir(tmp_path)
    by_file = get_task(f"{tmp_path / 'usertask_mod.py'}:make")
    assert isinstance(by_file, babysit.Task)
    by_module = get_task("usertask_mod:make", width=3)  # the current directory is importable
    assert by_module.num_classes == 2
    sys.modules.pop("usertask_mod", None)


@pytest.mark.parametrize(
    ("source", "spec", "needle"),
    [
        ("import not_a_real_module_xyz\n", "bad1.py:make", "not_a_real_module_xyz"),
        (f"{DECLARED}def make():\n    return 1\n", "bad2.py:make", "returned int"),
        ("x = 1\n", "bad3.py:make", "no function 'make'"),
        ("def make():\n    return 1\n", "missing.py:make", "not found"),
        (f"{DECLARED}def make(a):\n    return a\n", "bad4.py:make", "cannot call"),
    ],
)
def test_user_task_errors_are_one_line(tmp_path: Path, source: str, spec: str, needle: str) -> None:
    name = spec.split(":")[0]
    if name != "missing.py":
        (tmp_path / name).write_text(source)
    with pytest.raises(TaskError) as err:
        get_task(f"{tmp_path / name}:make")
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_train_accepts_a_task_object(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "usertask_obj.py").write_text(USER_TASK)
    monkeypatch.chdir(tmp_path)
    task = get_task("usertask_obj.py:make")
    run = babysit.train({"train": {"epochs": 2, "report": False}}, task=task, out=tmp_path / "r")
    assert [r["epoch"] for r in run.metrics if r["kind"] == "epoch"] == [1, 2]


def test_registry_is_complete() -> None:
    assert set(TASKS) == set(babysit.config.BUNDLED_TASKS)
