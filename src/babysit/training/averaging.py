"""Running averages of the weights during training: EMA (``train.ema``) and SWA (``train.swa``).

Both keep a copy of the model, ``torch.optim.swa_utils.AveragedModel``, updated after every
optimizer step s = 1, 2, ... with the weights w_s it produced; the first update copies w_s
(AveragedModel's rule), later ones average:

EMA, ``train.ema = d`` in (0, 1): at update t = 1, 2, ... (t = updates before this one)

    w_avg <- delta_t * w_avg + (1 - delta_t) * w_s,   delta_t = min(d, (1 + t) / (10 + t))

The warm-up matters: a plain 0.999 over a 1,000-step run leaves 37% of the average at the
first weights (0.999 ** 1000); with it the early weights fade fast (delta_1 = 2/11,
delta_90 = 0.91). Buffers are averaged the same way (``use_buffers=True``: batch-norm statistics
follow the weights they belong to); integer buffers (``num_batches_tracked``) are copied.

SWA (Izmailov et al. 2018): the equal mean of the weights after every step s > s0, where
s0 = round(``train.swa_start`` x steps_per_epoch) (default swa_start: 0.75 x train.epochs,
fixed when the run starts, so a resume that extends the run keeps it); ``train.swa_lr``,
when given, is the constant lr of those steps. Buffers are copied from the model; a model
with batch norm gets its statistics recomputed for the averaged weights with ``update_bn``
(one pass over the un-augmented training split, ``Task.train_eval``) before each evaluation.

Every epoch the averaged model is evaluated on validation (its keys prefixed ``ema_`` /
``swa_`` in the epoch record); nothing here draws from the run's RNGs (update_bn's forward
runs in a forked RNG), so the raw weights train exactly as without averaging.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, update_bn

from babysit.config import Config
from babysit.splits import Batches
from babysit.tasks import Task
from babysit.training.callbacks import is_better
from babysit.training.evaluate import evaluate

__all__ = ["SWA_START", "Averager", "WarmedEma", "averager_for", "ema_decay"]

SWA_START = 0.75  # default train.swa_start as a share of train.epochs: the last quarter


def ema_decay(decay: float, t: int) -> float:
    """The warmed-up decay at update ``t``: ``min(decay, (1 + t) / (10 + t))``."""
    return min(decay, (1 + t) / (10 + t))


class WarmedEma:
    """AveragedModel's ``multi_avg_fn`` for the warmed-up EMA; ``t`` is set before each update.

    AveragedModel calls it once per (device, dtype) group of one update, so the step
    counter lives in the :class:`Averager`, not here. Floats: ``avg.lerp_(w, 1 - delta_t)``,
    i.e. ``delta_t avg + (1 - delta_t) w``; other dtypes (counters) are copied.
    """

    def __init__(self, decay: float) -> None:
        self.decay = decay
        self.t = 0

    def __call__(
        self, averaged: Sequence[Tensor], current: Sequence[Tensor], num_averaged: Tensor | int
    ) -> None:
        weight = 1.0 - ema_decay(self.decay, self.t)
        floats = [(a, w) for a, w in zip(averaged, current, strict=True) if a.is_floating_point()]
        if floats:
            torch._foreach_lerp_([a for a, _ in floats], [w for _, w in floats], weight)
        for a, w in zip(averaged, current, strict=True):
            if not a.is_floating_point():
                a.copy_(w)


def _has_batch_norm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


class Averager:
    """The averaged model of one run: updated per step, evaluated and checkpointed per epoch.

    kind: "ema" | "swa"; start_step: steps after which updates begin (EMA: 0);
    bn_batches: where batch-norm statistics are recomputed (None: never); lr: SWA's
    constant lr (None: the schedule's). ``best`` is the epoch record (keys without the
    prefix, plus ``kind``) with the best averaged validation score so far.
    """

    def __init__(
        self,
        kind: str,
        model: nn.Module,
        task: Task,
        *,
        multi_avg_fn: WarmedEma | None = None,
        use_buffers: bool,
        start_step: int = 0,
        bn_batches: Batches | None = None,
        lr: float | None = None,
    ) -> None:
        self.kind, self.task, self.start_step = kind, task, start_step
        self.warm = multi_avg_fn
        self.model = AveragedModel(model, multi_avg_fn=multi_avg_fn, use_buffers=use_buffers)
        self.bn_batches, self.lr = bn_batches, lr
        self.updates = 0  # = model.n_averaged, kept on the host (no device sync per step)
        self.best: dict[str, Any] = {}
        self.last: dict[str, Any] = {}  # the newest evaluation, keys without the prefix

    @property
    def module(self) -> nn.Module:
        """The averaged network itself (the task's model class, its state_dict keys)."""
        return self.model.module

    def set_lr(self, optimizer: torch.optim.Optimizer, step: int, lr: float) -> float:
        """The lr of optimizer step ``step`` (1-based): SWA's constant lr once averaged."""
        if self.lr is None or step <= self.start_step:
            return lr
        for group in optimizer.param_groups:
            group["lr"] = self.lr
        return self.lr

    def update(self, model: nn.Module, step: int) -> None:
        """Average in the weights after optimizer step ``step`` (1-based)."""
        if step <= self.start_step:
            return
        if self.warm is not None:
            self.warm.t = self.updates
        self.model.update_parameters(model)
        self.updates += 1

    def end_epoch(self, epoch: int, step: int, val: Batches) -> dict[str, float]:
        """Evaluate the average on ``val``: ``{"ema_val_loss", "ema_val_<metric>"}`` (or
        ``swa_``), empty before the first update; the best epoch is kept in ``best``."""
        if self.updates == 0:
            return {}
        if self.bn_batches is not None:
            device = self.bn_batches.device
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                update_bn(self.bn_batches, self.module)
        task = self.task
        loss, value = evaluate(self.module, val, task.loss_fn, task.metric)
        key = f"val_{task.metric}"
        self.last = {"epoch": epoch, "step": step, "val_loss": loss, key: value}
        if math.isfinite(value) and is_better(value, self.best.get(key), task.direction):
            self.best = {"kind": self.kind, **self.last}
        return {f"{self.kind}_val_loss": loss, f"{self.kind}_{key}": value}

    def checkpoint(self, config: Config) -> dict[str, Any]:
        """An averaged checkpoint: ``"model"`` loads into ``task.model_factory`` (strict)."""
        return {
            "model": self.module.state_dict(),
            "epoch": self.last["epoch"],
            "step": self.last["step"],
            "averaged": self.kind,
            "updates": self.updates,
            "metrics": dict(self.last),
            "config": config.to_toml(),
        }

    def state_dict(self) -> dict[str, Any]:
        """What a resume continues the average from (the trainer's checkpoint holds it)."""
        return {
            "kind": self.kind,
            "model": self.model.state_dict(),  # module.* and n_averaged
            "start_step": self.start_step,
            "best": dict(self.best),
            "last": dict(self.last),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.updates = int(self.model.n_averaged.item())
        self.start_step = int(state["start_step"])  # the first session's default swa_start
        self.best, self.last = dict(state["best"]), dict(state["last"])


def averager_for(
    config: Config, task: Task, model: nn.Module, *, steps_per_epoch: int, device: torch.device
) -> Averager | None:
    """The run's averager as ``train.ema`` / ``train.swa`` say (None: both off).

    Built before the monitor hooks the model: AveragedModel deep-copies it.
    """
    cfg = config.train
    if cfg.ema > 0:
        return Averager("ema", model, task, multi_avg_fn=WarmedEma(cfg.ema), use_buffers=True)
    if not cfg.swa:
        return None
    start = SWA_START * cfg.epochs if cfg.swa_start is None else cfg.swa_start
    bn = None
    if _has_batch_norm(model):
        # the training batch size: update_bn averages the per-batch statistics, as training saw them
        bn = Batches(task.train_eval, cfg.batch_size, shuffle=False, device=device, name="train")
    return Averager(
        "swa",
        model,
        task,
        use_buffers=False,
        start_step=round(start * steps_per_epoch),
        bn_batches=bn,
        lr=cfg.swa_lr,
    )
