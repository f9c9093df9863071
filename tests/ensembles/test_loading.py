"""Loading members: regular and EMA-layout checkpoints, and the checks that refuse a mix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from babysit.ensembles.loading import MemberLoader, check_compatible, read_state
from babysit.ensembles.members import MemberSpec, best_checkpoint, run_dir_of
from babysit.errors import CheckpointError, ConfigError
from babysit.tasks import Task
from babysit.training.population import train_population

from .runs import ema_checkpoint, make_runs, run_config


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return make_runs(tmp_path_factory.mktemp("runs"), ["a", "b"])


def _spec(path: Path) -> MemberSpec:
    return MemberSpec(path.resolve(), run_dir_of(path), "member")


def test_a_checkpoint_loads_into_the_model_its_run_config_builds(runs: list[Path]) -> None:
    path = best_checkpoint(runs[0], "max")
    member = MemberLoader().load(_spec(path))
    expected = torch.load(path, weights_only=True)["model"]
    assert all(torch.equal(member.model.state_dict()[k], v) for k, v in expected.items())
    assert not member.model.training
    assert '"name": "digits-mlp"' in member.task_key


def test_an_ema_checkpoint_holding_only_the_model_loads_too(runs: list[Path]) -> None:
    path = ema_checkpoint(runs[1], scale=0.5)
    member = MemberLoader().load(_spec(path))
    assert member.spec.run_dir == runs[1].resolve()
    source = torch.load(best_checkpoint(runs[1], "max"), weights_only=True)["model"]
    key = next(iter(source))
    assert torch.allclose(member.model.state_dict()[key], 0.5 * source[key])


def test_runs_of_one_task_share_one_task_object(runs: list[Path]) -> None:
    loader = MemberLoader()
    a, b = (loader.load(_spec(best_checkpoint(r, "max"))) for r in runs)
    assert a.task is b.task
    assert check_compatible([a, b]) == 10


def test_a_corrupt_checkpoint_is_a_checkpoint_error(tmp_path: Path) -> None:
    bad = tmp_path / "epoch=001-val_acc=0.5000.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"cannot load the checkpoint"):
        read_state(bad)
    torch.save({"weights": {}}, bad)
    with pytest.raises(CheckpointError, match=r"no 'model' state_dict"):
        read_state(bad)
    with pytest.raises(CheckpointError, match=r"checkpoint not found"):
        read_state(tmp_path / "gone.pt")


def test_a_checkpoint_that_does_not_fit_its_runs_model(runs: list[Path], tmp_path: Path) -> None:
    path = runs[0] / "checkpoints" / "ema" / "epoch=001-val_acc=0.1000.pt"
    path.parent.mkdir(exist_ok=True)
    torch.save({"model": {"0.weight": torch.zeros(3, 3)}}, path)
    with pytest.raises(CheckpointError, match=r"does not fit the model .*config.toml builds"):
        MemberLoader().load(_spec(path))
    path.unlink()


def test_members_of_different_tasks_are_refused(runs: list[Path], tmp_path: Path) -> None:
    config = run_config()
    config["task"] = {"name": "spiral-mlp"}
    train_population(config, [{}], out=tmp_path / "spiral", names=["s"])
    loader = MemberLoader()
    a = loader.load(_spec(best_checkpoint(runs[0], "max")))
    b = loader.load(_spec(best_checkpoint(tmp_path / "spiral" / "s", "max")))
    with pytest.raises(ConfigError, match=r"members of different tasks: .*spiral-mlp"):
        check_compatible([a, b])


def _classes_task() -> Task:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 4, generator=g), torch.randint(0, 3, (40,), generator=g)

    def factory(cfg: dict[str, Any]) -> nn.Module:
        return nn.Linear(4, cfg.get("classes", 3))

    return Task(factory, (x[:30], y[:30]), (x[30:], y[30:]), F.cross_entropy, num_classes=3)


def test_members_with_different_numbers_of_classes_are_refused(tmp_path: Path) -> None:
    task = _classes_task()
    config = {"train": {"epochs": 1, "batch_size": 10, "report": False}}
    train_population(
        config,
        [{"model.classes": 3}, {"model.classes": 4}],
        task=task,
        out=tmp_path / "pop",
        names=["c3", "c4"],
    )
    loader = MemberLoader(task)
    members = [
        loader.load(_spec(best_checkpoint(tmp_path / "pop" / n, "max"))) for n in ("c3", "c4")
    ]
    with pytest.raises(ConfigError, match=r"different numbers of classes: .*c4.* scores 4, .* 3"):
        check_compatible(members)
