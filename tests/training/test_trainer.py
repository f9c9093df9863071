"""The training loop: learning, determinism, resume, divergence, early stopping."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch

from babysit.config import load_config
from babysit.monitor.log import read_metrics
from babysit.tasks import task_for
from babysit.training.callbacks import Callback, TrainerView
from babysit.training.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
from babysit.training.run import train
from babysit.training.trainer import Trainer


def _records(run_dir: Path, kinds: tuple[str, ...] = ("batch", "epoch")) -> list[dict]:
    return [r for r in read_metrics(run_dir / "metrics.jsonl") if r["kind"] in kinds]


def test_run_dir_holds_config_metrics_checkpoints(tmp_path: Path, tiny_config: dict) -> None:
    run = train(tiny_config, out=tmp_path / "run", quiet=True)
    assert (run.dir / "config.toml").is_file()
    epochs = [r for r in run.metrics if r["kind"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2, 3]
    assert epochs[-1]["val_acc"] > 0.7  # far above chance (0.1) after 3 short epochs
    batch = next(r for r in run.metrics if r["kind"] == "batch")
    assert set(batch) >= {"step", "epoch", "loss", "data_loss", "reg_loss", "lr", "mu"}
    # the reg term is logged apart from the data loss, and they add up to the loss
    assert batch["loss"] == pytest.approx(batch["data_loss"] + batch["reg_loss"], rel=1e-5)
    assert batch["reg_loss"] > 0
    assert list_checkpoints(run.dir / "checkpoints")
    assert run.best["val_acc"] == max(r["val_acc"] for r in epochs)


def test_same_config_gives_identical_metrics(tmp_path: Path, tiny_config: dict) -> None:
    a = train(tiny_config, out=tmp_path / "a", quiet=True)
    b = train(tiny_config, out=tmp_path / "b", quiet=True)
    assert _records(a.dir) == _records(b.dir)
    c = train(
        {**tiny_config, "train": {**tiny_config["train"], "seed": 1}},
        out=tmp_path / "c",
        quiet=True,
    )
    assert _records(c.dir) != _records(a.dir)


class _Kill(Callback):
    """Simulate a killed worker: raise in the middle of an epoch."""

    def __init__(self, at_step: int) -> None:
        self.at_step = at_step

    def on_step_end(self, trainer: Any, step: int, loss: float) -> None:
        if step == self.at_step:
            raise KeyboardInterrupt


def test_resume_after_a_kill_equals_uninterrupted_run(tmp_path: Path, tiny_config: dict) -> None:
    cfg = copy.deepcopy(tiny_config)
    cfg["model"]["dropout"] = 0.2  # the global torch RNG must be restored too
    cfg["train"]["epochs"] = 4
    cfg["schedule"] = {"kind": "plateau", "patience": 1}
    full = train(cfg, out=tmp_path / "full", quiet=True)

    killed = tmp_path / "killed"
    steps_per_epoch = 17  # ceil(1079 / 64)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, out=killed, quiet=True, callbacks=[_Kill(2 * steps_per_epoch + 5)])
    assert [c.epoch for c in list_checkpoints(killed / "checkpoints")][-1] == 2
    resumed = train(None, out=killed, resume=True, quiet=True)

    def final_weights(d: Path) -> dict[str, torch.Tensor]:
        return load_checkpoint(list_checkpoints(d / "checkpoints")[-1].path)["model"]

    a, b = final_weights(full.dir), final_weights(resumed.dir)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # the log of the resumed run is the uninterrupted log plus one "resumed" event
    assert _records(resumed.dir) == _records(full.dir)
    events = [r["what"] for r in read_metrics(killed / "metrics.jsonl") if r["kind"] == "event"]
    assert "resumed" in events


def test_resume_can_extend_epochs(tmp_path: Path, tiny_config: dict) -> None:
    train(tiny_config, out=tmp_path / "r", quiet=True)
    longer = {**tiny_config, "train": {**tiny_config["train"], "epochs": 5}}
    run = train(longer, out=tmp_path / "r", resume=True, quiet=True)
    assert [r["epoch"] for r in run.metrics if r["kind"] == "epoch"] == [1, 2, 3, 4, 5]


def test_nan_loss_stops_the_run_and_marks_it_diverged(tmp_path: Path, tiny_config: dict) -> None:
    cfg = copy.deepcopy(tiny_config)
    cfg["optim"] = {"rule": "sgd", "lr": 1e6}
    run = train(cfg, out=tmp_path / "d", quiet=True)
    assert run.diverged and run.stopped == "diverged"
    events = [r for r in run.metrics if r["kind"] == "event" and r["what"] == "diverged"]
    assert len(events) == 1 and events[0]["lr"] == 1e6
    last_step = max(r["step"] for r in run.metrics if r["kind"] == "batch")
    assert events[0]["step"] == last_step + 1  # stopped at the step that blew up, no update


def test_the_library_prints_nothing(
    tmp_path: Path, tiny_config: dict, capfd: pytest.CaptureFixture[str]
) -> None:
    cfg = copy.deepcopy(tiny_config)
    cfg["optim"] = {"rule": "sgd", "lr": 1e6}  # diverges: findings to show
    cfg["train"].update(sanity=True, report=True)  # a gate's report, the HTML report
    run = train(cfg, out=tmp_path / "q", quiet=True)
    assert run.diverged and run.findings and (run.dir / "report.html").is_file()
    assert capfd.readouterr() == ("", "")


def test_early_stopping_restores_the_best_weights(tmp_path: Path, tiny_config: dict) -> None:
    cfg = copy.deepcopy(tiny_config)
    cfg["train"].update(epochs=30, early_stop=2)
    cfg["optim"]["lr"] = 3e-2  # noisy enough for validation to stall
    seen: dict[str, Any] = {}

    class Grab(Callback):
        def on_train_end(self, trainer: Any) -> None:
            seen["model"] = {k: v.clone() for k, v in trainer.model.state_dict().items()}

    run = train(cfg, out=tmp_path / "e", quiet=True, callbacks=[Grab()])
    assert run.stopped == "early_stop"
    epochs = [r for r in run.metrics if r["kind"] == "epoch"]
    assert len(epochs) < 30
    best = load_checkpoint(
        next(
            c for c in list_checkpoints(run.dir / "checkpoints") if c.epoch == run.best["epoch"]
        ).path
    )["model"]
    for k, v in best.items():
        assert torch.equal(seen["model"][k], v)


def test_clip_grad_limits_the_update(tmp_path: Path, tiny_config: dict) -> None:
    cfg = copy.deepcopy(tiny_config)
    cfg["optim"] = {"rule": "sgd", "lr": 10.0}
    cfg["train"].update(epochs=1, clip_grad=1e-3)
    run = train(cfg, out=tmp_path / "c", quiet=True)
    assert not run.diverged  # lr 10 without clipping blows up; with it, steps are tiny


def test_lbfgs_trains_full_batch(tmp_path: Path, tiny_config: dict) -> None:
    cfg = copy.deepcopy(tiny_config)
    cfg["optim"] = {"rule": "lbfgs", "lr": 1.0}
    cfg["train"]["epochs"] = 4
    run = train(cfg, out=tmp_path / "l", quiet=True)
    batches = [r for r in run.metrics if r["kind"] == "batch"]
    assert [b["step"] for b in batches] == [1, 2, 3, 4]  # one full-batch step per epoch
    assert batches[-1]["loss"] < 0.5 * batches[0]["loss"]
    assert run.best["val_acc"] > 0.85


def test_lbfgs_warns_on_a_large_training_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from torch import nn

    import babysit
    from babysit.training import trainer as trainer_mod

    x = torch.randn(300, 4)
    y = (x[:, 0] > 0).long()
    task = babysit.Task(
        model_factory=lambda cfg: nn.Linear(4, 2),
        train=(x, y),
        val=(x[:50], y[:50]),
        loss_fn=nn.functional.cross_entropy,
    )
    cfg = {"optim": {"rule": "lbfgs", "lr": 1.0}, "train": {"epochs": 1, "report": False}}
    monkeypatch.setattr(trainer_mod, "FULL_BATCH_WARN_EXAMPLES", 100)
    with pytest.warns(UserWarning, match="full-batch"):
        run = train(cfg, task=task, out=tmp_path / "w", quiet=True)
    assert any(r.get("what") == "full_batch_warning" for r in run.metrics)


def test_momentum_schedule_is_logged(tmp_path: Path, tiny_config: dict) -> None:
    cfg = copy.deepcopy(tiny_config)
    cfg["optim"] = {"rule": "momentum", "lr": 0.05, "mu": 0.99}
    cfg["schedule"] = {"kind": "step", "every": 1, "factor": 0.5, "mu_start": 0.5, "mu_epochs": 2}
    run = train(cfg, out=tmp_path / "m", quiet=True)
    batches = [r for r in run.metrics if r["kind"] == "batch"]
    assert batches[0]["mu"] == pytest.approx(0.5) and batches[-1]["mu"] == pytest.approx(0.99)
    assert batches[0]["lr"] == pytest.approx(0.05) and batches[-1]["lr"] == pytest.approx(0.0125)


class _CountSteps(Callback):
    """A callback with state: the steps it has seen."""

    def __init__(self) -> None:
        self.steps = 0

    def on_step_end(self, trainer: TrainerView, step: int, loss: float) -> None:
        self.steps += 1

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps = int(state["steps"])


class _Capture(Callback):
    """Keep a copy of the trainer's state_dict at the end of one epoch."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch
        self.state: dict[str, Any] = {}

    def on_epoch_end(self, trainer: TrainerView, epoch: int, metrics: dict[str, Any]) -> None:
        if epoch == self.epoch:
            self.state = copy.deepcopy(trainer.state_dict())


def _assert_same(a: Any, b: Any, where: str = "state") -> None:
    """Nested dicts / lists of tensors and plain values, equal bit for bit."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    else:
        assert a == b, where


def test_a_fresh_trainer_loading_the_state_dict_continues_bit_identically(
    tmp_path: Path, tiny_config: dict
) -> None:
    """Oracle: the same run, never stopped. Its state after epoch 2, saved and loaded back
    into a new Trainer (global RNG disturbed meanwhile), gives the same epochs 3 and 4."""
    cfg = copy.deepcopy(tiny_config)
    cfg["model"]["dropout"] = 0.2  # the global torch RNG is part of the state
    cfg["train"].update(epochs=4, early_stop=10)
    cfg["schedule"] = {"kind": "plateau", "patience": 1}
    config = load_config(cfg)
    # "min" on an accuracy that rises: epoch 1 stays the best, so the best record, early
    # stopping's counter and kept weights, and the plateau's lr cuts all cross the cut
    task = dataclasses.replace(task_for(config), direction="min")
    cpu = torch.device("cpu")
    at_2, at_4, oracle_steps = _Capture(epoch=2), _Capture(epoch=4), _CountSteps()
    oracle = Trainer(
        config, task, tmp_path / "a", device=cpu, quiet=True,
        callbacks=[oracle_steps, at_2, at_4],
    )  # fmt: skip
    oracle.fit()
    save_checkpoint(tmp_path / "state.pt", at_2.state)  # through a weights_only load
    torch.manual_seed(123)
    steps, fresh_at_4 = _CountSteps(), _Capture(epoch=4)
    fresh = Trainer(
        config, task, tmp_path / "b", device=cpu, quiet=True, callbacks=[steps, fresh_at_4]
    )
    fresh.load_state_dict(load_checkpoint(tmp_path / "state.pt"))
    fresh.fit()

    assert oracle.best_epoch == 1 and oracle.controller.state_dict()["plateau"]["lr"] < 3e-3
    _assert_same(fresh_at_4.state, at_4.state)  # model, optimizer, schedule, RNGs, callbacks
    _assert_same(fresh.model.state_dict(), oracle.model.state_dict())  # epoch 1's, restored
    assert fresh.best_record == oracle.best_record
    assert steps.steps == oracle_steps.steps == 4 * 17
    step = at_2.state["step"]
    later = [
        r
        for r in _records(oracle.run_dir)
        if (r["kind"] == "batch" and r["step"] > step) or (r["kind"] == "epoch" and r["epoch"] > 2)
    ]
    assert len(later) == 2 * 17 + 2 and _records(fresh.run_dir) == later


@pytest.mark.parametrize(("epochs", "steps"), [(0.5, 8), (0.01, 1), (1.5, 17 + 8)])
def test_a_fractional_epoch_trains_that_share_of_the_steps_and_evaluates_once(
    tmp_path: Path, tiny_config: dict, epochs: float, steps: int
) -> None:
    cfg = copy.deepcopy(tiny_config)
    cfg["train"]["epochs"] = epochs  # 17 steps per epoch: round(0.5 * 17) = 8, at least 1
    run = train(cfg, out=tmp_path / "f", quiet=True)
    batches = [r for r in run.metrics if r["kind"] == "batch"]
    assert [b["step"] for b in batches] == list(range(1, steps + 1))
    ends = [r["epoch"] for r in run.metrics if r["kind"] == "epoch"]
    assert ends == list(range(1, len(ends) + 1)) and len(ends) == -int(-epochs // 1)
    assert [c.epoch for c in list_checkpoints(run.dir / "checkpoints")][-1] == ends[-1]
    assert "epochs = " + str(epochs) in (run.dir / "config.toml").read_text()


def test_a_run_ending_mid_epoch_cannot_be_extended(tmp_path: Path, tiny_config: dict) -> None:
    from babysit.errors import CheckpointError

    cfg = copy.deepcopy(tiny_config)
    cfg["train"]["epochs"] = 0.5
    train(cfg, out=tmp_path / "h", quiet=True)
    with pytest.raises(CheckpointError, match="ends within epoch 1"):
        train(None, out=tmp_path / "h", resume=True, overrides=["train.epochs=2"], quiet=True)


class _StopAt(Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, trainer: TrainerView, epoch: int, metrics: dict[str, Any]) -> None:
        if epoch == self.epoch:
            trainer.stop = "pruned"


def test_a_callback_stops_the_run_cleanly_with_the_epochs_checkpoint(
    tmp_path: Path, tiny_config: dict
) -> None:
    run = train(tiny_config, out=tmp_path / "p", quiet=True, callbacks=[_StopAt(2)])
    assert run.stopped == "pruned" and not run.diverged
    assert [r["epoch"] for r in run.metrics if r["kind"] == "epoch"] == [1, 2]
    assert [c.epoch for c in list_checkpoints(run.dir / "checkpoints")][-1] == 2
    stopped = [r for r in run.metrics if r["kind"] == "event" and r["what"] == "pruned"]
    assert stopped and stopped[0]["epoch"] == 2
