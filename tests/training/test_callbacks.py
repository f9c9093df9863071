"""The built-in callbacks need no more of a trainer than TrainerView: each runs on a fake."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from torch import nn

from babysit.config import Config, load_config
from babysit.monitor.diagnose import Finding
from babysit.training.callbacks import Callback, Checkpointer, EarlyStopping, ProgressCallback
from babysit.training.checkpoint import list_checkpoints, load_checkpoint


@dataclass
class FakeTrainer:
    """Exactly the members of TrainerView, and no training at all."""

    run_dir: Path
    config: Config = field(default_factory=lambda: load_config({}))
    model: nn.Module = field(default_factory=lambda: nn.Linear(3, 2))
    epoch: int = 0
    step: int = 0
    steps_per_epoch: int = 5
    last_epoch: int = 10
    total_steps: int = 50
    metric_key: str = "val_acc"
    direction: str = "max"
    best_epoch: int | None = None
    stop: str | None = None
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def log_event(self, what: str, **fields: Any) -> None:
        self.events.append((what, fields))

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "epoch": self.epoch}


def _end_epoch(cb: Callback, trainer: FakeTrainer, epoch: int, acc: float, *, best: bool) -> None:
    trainer.epoch = epoch
    if best:
        trainer.best_epoch = epoch
    cb.on_epoch_end(trainer, epoch, {"epoch": epoch, "val_acc": acc})


def test_early_stopping_stops_after_patience_and_restores_the_best_weights(
    tmp_path: Path,
) -> None:
    trainer = FakeTrainer(run_dir=tmp_path)
    stopper = EarlyStopping(patience=2)
    _end_epoch(stopper, trainer, 1, 0.5, best=True)
    best = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    with torch.no_grad():
        for p in trainer.model.parameters():
            p.add_(1.0)  # training goes on and gets worse
    _end_epoch(stopper, trainer, 2, 0.4, best=False)
    assert trainer.stop is None
    _end_epoch(stopper, trainer, 3, 0.4, best=False)
    assert trainer.stop == "early_stop"
    stopper.on_train_end(trainer)
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(v, best[k])


def test_early_stopping_state_round_trips(tmp_path: Path) -> None:
    trainer = FakeTrainer(run_dir=tmp_path)
    a = EarlyStopping(patience=3)
    _end_epoch(a, trainer, 1, 0.5, best=True)
    _end_epoch(a, trainer, 2, 0.4, best=False)
    b = EarlyStopping(patience=3)
    b.load_state_dict(a.state_dict())
    _end_epoch(a, trainer, 3, 0.4, best=False)
    _end_epoch(b, trainer, 3, 0.4, best=False)
    assert a.state_dict()["bad_epochs"] == b.state_dict()["bad_epochs"] == 2


def test_checkpointer_saves_the_trainer_state_under_the_notes_name(tmp_path: Path) -> None:
    trainer = FakeTrainer(run_dir=tmp_path)
    saver = Checkpointer(tmp_path / "ckpt", keep_best=1, keep_last=1)
    for epoch, acc in [(1, 0.5), (2, 0.9), (3, 0.7)]:
        _end_epoch(saver, trainer, epoch, acc, best=False)
    names = [c.path.name for c in list_checkpoints(tmp_path / "ckpt")]
    assert names == ["epoch=002-val_acc=0.9000.pt", "epoch=003-val_acc=0.7000.pt"]
    assert load_checkpoint(tmp_path / "ckpt" / names[1])["epoch"] == 3
    assert [w for w, _ in trainer.events] == ["checkpoint"] * 3


def test_progress_renders_epochs_findings_and_the_report(tmp_path: Path) -> None:
    trainer = FakeTrainer(run_dir=tmp_path)
    err, out = io.StringIO(), io.StringIO()
    progress = ProgressCallback(console=Console(file=err), out=Console(file=out, width=300))
    progress.on_train_start(trainer)
    progress.on_epoch_end(trainer, 1, {"epoch": 1, "train_loss": 1.5, "val_acc": 0.25})
    progress.on_train_end(trainer)
    finding = Finding("lr_too_low", "warning", 7, "the loss fell slowly", "raise the lr")
    progress.on_run_end(trainer, [finding], tmp_path / "report.html")
    assert "epoch 1  train_loss 1.5000  val_acc 0.2500" in err.getvalue()
    assert str(finding) in out.getvalue()  # "[warning] ..." is text, not rich markup
    assert f"report written to {tmp_path / 'report.html'}" in out.getvalue()
