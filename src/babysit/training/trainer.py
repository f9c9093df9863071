"""The Trainer: epochs x minibatches with torch.optim, validation, callbacks, its state.

loss = data loss + reg_fn(model, reg), both logged. Every epoch: validation loss and
the task's metric, a checkpoint, the lr schedule and early stopping. ``train.epochs = 2.5``
(the notes' "1 epoch or even less" in a search) trains 2 epochs, then epoch 3 is cut to
``round(0.5 * steps_per_epoch)`` steps (at least one). A NaN/inf loss stops the run at
that step and marks it diverged. Same config on the CPU => the same metrics, and a
resumed run ends with the weights an uninterrupted one would have. Every record goes
through the same Monitor as ``babysit.watch()``. ``train.ema`` / ``train.swa`` keep a running
average of the weights beside them (training/averaging.py), evaluated and checkpointed too.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from babysit.checks.sanity.chance import chance_loss
from babysit.config import Config
from babysit.monitor.log import MetricsWriter, event_record
from babysit.monitor.watch import Monitor, watch
from babysit.optim.build import OPTIMIZERS, LRController, create_optimizer
from babysit.optim.hparams import momentum_of
from babysit.splits import Batches, image_shape, split_size
from babysit.tasks import Task
from babysit.training.averaging import averager_for
from babysit.training.callbacks import (
    Callback,
    EarlyStopping,
    ProgressCallback,
    checkpointers,
    is_better,
)
from babysit.training.checkpoint import capture_rng, restore_rng, seed_everything
from babysit.training.evaluate import Tally, evaluate

__all__ = ["FULL_BATCH_WARN_EXAMPLES", "Trainer"]

FULL_BATCH_WARN_EXAMPLES = 10_000  # L-BFGS above this many training examples gets a warning


class Trainer:
    """One run: owns the model, optimizer, lr controller, data order and the metrics log."""

    def __init__(
        self,
        config: Config,
        task: Task,
        run_dir: Path,
        *,
        device: torch.device,
        quiet: bool = False,
        callbacks: Iterable[Callback] = (),
    ) -> None:
        cfg = config.train
        self.config, self.task, self.run_dir, self.device = config, task, run_dir, device
        self.metric_key = f"val_{task.metric}"
        self.generator = seed_everything(cfg.seed)
        self.model: nn.Module = task.model_factory(config.model_table()).to(device)
        opt = config.optim
        spec = OPTIMIZERS[opt.rule]
        self.full_batch = spec.full_batch  # L-BFGS: one closure step per epoch on all the data
        n_train = split_size(task.train, "train")
        self.train_batches = Batches(
            task.train,
            n_train if self.full_batch else cfg.batch_size,
            shuffle=not self.full_batch,
            generator=self.generator,
            device=device,
            name="train",
        )
        self.val_batches = Batches(
            task.val, cfg.eval_batch_size, shuffle=False, device=device, name="val"
        )
        # train.ema / train.swa: a running average of the weights (training/averaging.py)
        self.averager = averager_for(
            config, task, self.model, steps_per_epoch=self.steps_per_epoch, device=device
        )
        self.optimizer = create_optimizer(
            self.model.parameters(), opt.rule, opt.model_dump(exclude={"rule"})
        )
        sched = config.schedule
        self.controller = LRController(
            self.optimizer,
            kind=sched.kind,
            lr0=opt.lr,
            steps_per_epoch=self.steps_per_epoch,
            # the momentum a schedule drives and the log shows: SGD's mu, Adam's beta1
            mu=momentum_of(opt.rule, opt.model_dump()),
            momentum_key=spec.momentum_key,
            keys=sched.model_dump(exclude={"kind"}),
        )
        # early stopping first (it restores the best weights before others see them at the
        # end); the checkpointer last, so that a checkpoint holds every callback's new state
        self.callbacks: list[Callback] = [
            EarlyStopping(cfg.early_stop),
            *([] if quiet else [ProgressCallback()]),
            *callbacks,
            *checkpointers(run_dir / "checkpoints", cfg.keep_best, cfg.keep_last, self.averager),
        ]
        self.epoch = 0  # last completed epoch
        self.step = 0  # optimizer steps taken
        self.best_record: dict[str, Any] = {}  # the epoch record with the best metric so far
        self.stop: str | None = None
        self.diverged = False
        self.writer = MetricsWriter(run_dir / "metrics.jsonl")
        self.monitor: Monitor | None = None  # started by fit()
        if self.full_batch and n_train > FULL_BATCH_WARN_EXAMPLES:
            message = (
                f"optim.rule = {opt.rule!r} computes every step over all {n_train} training "
                "examples (it is full-batch, as the notes explain); on a set this large "
                "minibatch SGD + momentum or Adam is the usual choice"
            )
            warnings.warn(message, stacklevel=2)
            self.log_event("full_batch_warning", examples=n_train, message=message)

    # --- logging -------------------------------------------------------------------
    def log_event(self, what: str, **fields: Any) -> None:
        if self.monitor is not None:  # one path for every record keeps the file in order
            self.monitor.event(what, **fields)
        else:
            self.writer.write(event_record(self.step, what, **fields))

    def _start_monitor(self) -> Monitor:
        """The same Monitor as ``babysit.watch()``: probes, batch and epoch records."""
        return watch(
            self.model,
            self.optimizer,
            writer=self.writer,
            every=self.config.train.monitor_every,
            steps_per_epoch=self.steps_per_epoch,
            chance_loss=chance_loss(self.task),
            image_shape=image_shape(self.task),
            start_step=self.step,
            write_findings=False,  # the run's findings.json is written once it ends (lifecycle)
        )

    def _call(self, hook: str, *args: Any) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(self, *args)

    @property
    def steps_per_epoch(self) -> int:
        return len(self.train_batches)

    @property
    def last_epoch(self) -> int:
        return math.ceil(self.config.train.epochs)  # a fractional last epoch counts

    @property
    def total_steps(self) -> int:
        return sum(self.epoch_steps(e) for e in range(1, self.last_epoch + 1))

    def epoch_steps(self, epoch: int) -> int:
        """Optimizer steps in ``epoch`` (1-based): all, or the share train.epochs leaves."""
        left, full = self.config.train.epochs - (epoch - 1), self.steps_per_epoch
        return full if left >= 1 else max(1, round(left * full))

    @property
    def direction(self) -> str:
        return self.task.direction

    @property
    def best_epoch(self) -> int | None:
        return self.best_record.get("epoch")

    @property
    def best_value(self) -> float | None:
        return self.best_record.get(self.metric_key)

    # --- state ---------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything a run continues from, as tensors and plain types (a checkpoint's layout).

        Model, optimizer and lr schedule state; the epoch and step reached; the best epoch
        so far; each callback's state; the averaged weights (train.ema / train.swa); every
        RNG state, the data order's included. Like torch's, the tensors are the live ones:
        save the dict (or copy it) before training on.
        """
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.controller.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "best": dict(self.best_record),
            "callbacks": {k: s for k, cb in self._keyed_callbacks() if (s := cb.state_dict())},
            "rng": capture_rng(self.generator),
            "config": self.config.to_toml(),  # for a reader; a resume reads config.toml
            **({} if self.averager is None else {"averaged": self.averager.state_dict()}),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Inverse of :meth:`state_dict`: training then goes on as if it had never stopped."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.controller.load_state_dict(state["scheduler"])
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.best_record = dict(state["best"])
        saved = state["callbacks"]
        for key, cb in self._keyed_callbacks():
            if key in saved:  # a callback new in this session starts fresh
                cb.load_state_dict(saved[key])
        if self.averager is not None:
            self.averager.load_state_dict(state["averaged"])
        restore_rng(state["rng"], self.generator)

    def _keyed_callbacks(self) -> list[tuple[str, Callback]]:
        """(class name, or "name#2" for a second one of a class, callback)."""
        seen: Counter[str] = Counter()
        keyed = []
        for cb in self.callbacks:
            name = type(cb).__qualname__
            seen[name] += 1
            keyed.append((name if seen[name] == 1 else f"{name}#{seen[name]}", cb))
        return keyed

    # --- the loop ------------------------------------------------------------------
    def _train_epoch(self, epoch: int) -> dict[str, Any] | None:
        """One pass over the training data; None when the loss diverged."""
        task, model = self.task, self.model
        model.train()
        steps = self.steps_per_epoch
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        score = Tally(task.metric, task.ignore_index, self.device)
        seen = 0
        for i, (x, y) in zip(range(self.epoch_steps(epoch)), self.train_batches, strict=False):
            lr, mu = self.controller.at_step(self.step)
            if self.averager is not None:  # SWA's constant lr (train.swa_lr)
                lr = self.averager.set_lr(self.optimizer, self.step + 1, lr)
            out, data_loss, reg_loss, loss = self._forward(x, y)
            value = loss.item()  # one host sync per step: needed for the divergence guard
            if not math.isfinite(value):
                self._diverge(value, lr, epoch - 1 + i / steps, batch=(i + 1, x, y))
                return None
            try:
                if self.full_batch:
                    self.optimizer.step(self._closure(x, y))
                else:
                    self._backward(loss)
                    self.optimizer.step()
            except RuntimeError as exc:  # a step scale past the dtype (a momentum ramp on
                if "without overflow" not in str(exc):  # Adam's beta1): the run diverged
                    raise
                self._diverge(math.inf, lr, epoch - 1 + i / steps)
                return None
            self.step += 1
            if self.averager is not None:
                self.averager.update(self.model, self.step)
            assert self.monitor is not None
            self.monitor.step(
                value, data_loss=data_loss.detach(), reg_loss=reg_loss.detach(), lr=lr, mu=mu
            )
            loss_sum += data_loss.detach().double() * x.shape[0]
            score.add(out.detach(), y)
            seen += x.shape[0]
            self._call("on_step_end", self.step, value)
        train_loss = (loss_sum / max(seen, 1)).item()
        record: dict[str, Any] = {"train_loss": train_loss}
        train_score = score.value()  # None for metric "loss"
        record[f"train_{task.metric}"] = train_loss if train_score is None else train_score
        return record

    def _forward(
        self, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(outputs, data loss, reg loss, total loss) of one minibatch."""
        reg = self.config.train.reg
        out = self.model(x)
        data_loss = self.task.loss_fn(out, y)
        reg_loss = self.task.reg_fn(self.model, reg) if reg > 0 else torch.zeros_like(data_loss)
        return out, data_loss, reg_loss, data_loss + reg_loss

    def _backward(self, loss: torch.Tensor) -> torch.Tensor:
        """Gradients of ``loss`` into .grad (clipped when configured); returns the loss."""
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.train.clip_grad is not None:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.train.clip_grad)
        return loss

    def _closure(self, x: torch.Tensor, y: torch.Tensor) -> Callable[[], float]:
        """Re-evaluate loss and gradients on (x, y): what L-BFGS's line search calls."""

        def closure() -> float:
            return self._backward(self._forward(x, y)[3]).item()

        return closure

    def _diverge(
        self,
        value: float,
        lr: float,
        epoch: float,
        batch: tuple[int, torch.Tensor, torch.Tensor] | None = None,
    ) -> None:
        """Stop; the event says when, and ``inputs`` ("NaN" / "Inf") when the minibatch that
        blew up held non-finite inputs or targets: then the data is at fault, not the lr.
        (Not "nan" / "inf": the metrics log reads those strings back as floats.)"""
        self.diverged, self.stop = True, "diverged"
        extra: dict[str, Any] = {}
        if batch is not None:
            k, x, y = batch
            bad = [t for t in (x, y) if t.is_floating_point() and not bool(t.isfinite().all())]
            if bad:
                nan = any(bool(t.isnan().any()) for t in bad)
                extra = {"batch": k, "inputs": "NaN" if nan else "Inf"}
        # the step whose loss blew up: it took no update, so no batch record carries it
        self.log_event("diverged", step=self.step + 1, loss=value, lr=lr, epoch=epoch, **extra)

    def _diverge_val(self, epoch: int, val_loss: float, val_value: float) -> None:
        """A NaN/inf validation loss or metric: the run diverged as for a NaN training loss.

        The event says whether the validation inputs hold NaN/inf (bad data, not a bad lr).
        """
        self.diverged, self.stop = True, "diverged"
        bad = next(
            (i for i, (x, _) in enumerate(self.val_batches) if not torch.isfinite(x).all()), None
        )
        self.log_event(
            "diverged",
            split="val",
            epoch=epoch,
            loss=val_loss,
            **{self.metric_key: val_value},
            lr=self.optimizer.param_groups[0]["lr"],
            nonfinite_inputs_batch=bad,
        )

    def fit(self) -> None:
        """Train for the configured epochs (from where a resume left off)."""
        monitor = self.monitor = self._start_monitor()
        self._call("on_train_start")
        try:
            for epoch in range(self.epoch + 1, self.last_epoch + 1):
                self._call("on_epoch_start", epoch)
                record = self._train_epoch(epoch)
                if record is None:
                    break
                val_loss, val_value = evaluate(
                    self.model,
                    self.val_batches,
                    self.task.loss_fn,
                    self.task.metric,
                    ignore_index=self.task.ignore_index,
                )
                record = {"epoch": epoch, **record}
                record["val_loss"] = val_loss
                record[self.metric_key] = val_value
                if not (math.isfinite(val_loss) and math.isfinite(val_value)):
                    monitor.log_epoch(**record)  # shown, but no checkpoint holds this epoch
                    self._diverge_val(epoch, val_loss, val_value)
                    break
                if self.averager is not None:  # ema_val_loss, ema_val_acc (or swa_)
                    record.update(self.averager.end_epoch(epoch, self.step, self.val_batches))
                if math.isfinite(val_value) and is_better(
                    val_value, self.best_value, self.task.direction
                ):
                    self.best_record = record
                self.controller.end_epoch(val_value, mode=self.task.direction)
                monitor.log_epoch(**record)  # written and flushed
                self.epoch = epoch
                self._call("on_epoch_end", epoch, record)
                if self.stop:
                    self.log_event(self.stop, epoch=epoch, best_epoch=self.best_epoch)
                    break
        finally:
            self._call("on_train_end")
            monitor.close()  # removes its hooks; the writer is ours to close
            self.monitor = None
            self.writer.close()
