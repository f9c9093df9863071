"""One population (a chunk of a group's members) trained epoch by epoch.

Each step, for all P members at once (what the trainer does for one model):

    losses, live, g = engine.grads(w, batch)     live: still training and loss finite
    g = g * min(1, clip / (|g| + 1e-6))          per member (train.clip_grad; torch's formula)
    w, s = rules.step(rule, w, g, s, **hp)       hp: numbers, or (P,) tensors where they differ
    rows not live keep their w and s             a member with a NaN/inf loss is frozen there

Each epoch end: every member's validation loss and score (one batched pass per batch),
then per member what the trainer and its callbacks do: the best record, the plateau
schedule, early stopping, a checkpoint and the records of its run dir. Members that
stopped (diverged, early_stop, pruned) are then dropped from the stacked tensors, so the
others train on with fewer rows and none of their results change.

With population-based training (``pbt``, ``_population_exploit``), a member that diverges
is frozen until the next exploit step replaces it (stopped only when none is ahead), and
on exploit epochs the worst members take copies of the best after the epoch is written.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.func import vmap

from babysit.checks.sanity.chance import chance_loss
from babysit.config import Config
from babysit.optim import rules
from babysit.splits import Batches
from babysit.tasks import Task
from babysit.training._population_data import Batch, DataOrders
from babysit.training._population_engines import Engine
from babysit.training._population_exploit import Exploiter
from babysit.training._population_hparams import MemberHParams
from babysit.training._population_log import EpochTrace, MemberLog
from babysit.training._population_members import Member, MemberResult
from babysit.training._population_model import Stack
from babysit.training._population_pbt import PBT
from babysit.training._population_stacked import stacked_fn
from babysit.training.callbacks import is_better
from babysit.training.evaluate import SCORES

__all__ = ["OnEpoch", "PopulationLoop"]

# (epoch, {member index: its epoch record}) -> the indices of members to stop ("pruned")
OnEpoch = Callable[[int, Mapping[int, dict[str, Any]]], Iterable[int]]


def _clip(grads: dict[str, Tensor], max_norm: Tensor) -> dict[str, Tensor]:
    """torch's clip_grad_norm_, per member: g * min(1, max_norm / (||g||_total + 1e-6))."""
    norms = torch.stack([g.flatten(1).norm(dim=1) for g in grads.values()]).norm(dim=0)
    coef = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    return {k: g * coef.view(-1, *([1] * (g.ndim - 1))) for k, g in grads.items()}


class PopulationLoop:
    """Trains the members of one chunk; ``run()`` fills their MemberResults."""

    def __init__(
        self,
        task: Task,
        config: Config,
        members: Sequence[Member],
        stack: Stack,
        engine: Engine,
        *,
        device: torch.device,
        dirs: Mapping[int, Path] | None,
        on_epoch: OnEpoch | None,
        results: Mapping[int, MemberResult],
        pbt: PBT | None = None,
        notes: list[str] | None = None,
    ) -> None:
        self.task, self.config, self.device, self.engine = task, config, device, engine
        self.members = list(members)  # row -> member; rows drop out as members stop
        self.results, self.on_epoch, self.stack = results, on_epoch, stack
        self.rule, train = config.optim.rule, config.train
        self.data = DataOrders(
            task.train, [m.seed for m in members], batch_size=train.batch_size, device=device
        )
        self.val = Batches(task.val, train.eval_batch_size, shuffle=False, device=device)
        self.steps_per_epoch = len(self.data)
        dtype = next(iter(stack.params.values())).dtype
        self.hp = MemberHParams(
            self.rule,
            config.schedule.kind,
            members,
            steps_per_epoch=self.steps_per_epoch,
            dtype=dtype,
            device=device,
        )
        self.reg = self._column("train.reg", dtype)
        no_clip = all(m.get("train.clip_grad") is None for m in members)
        self.clip = None if no_clip else self._column("train.clip_grad", dtype)
        self.patience: list[int | None] = [m.get("train.early_stop") for m in members]
        self.bad_epochs = [0] * len(members)
        self.score = SCORES.get(task.metric)
        self.ignore_index = task.ignore_index
        self.stacked_score = None if self.score is None else stacked_fn(self.score)
        self.metric_key, self.direction = f"val_{task.metric}", task.direction
        self.step = 0
        self.logs: dict[int, MemberLog] = {}
        for member in members if dirs is not None else ():
            assert dirs is not None
            log = MemberLog.of(
                member, dirs[member.index], metric_key=self.metric_key, direction=self.direction
            )
            self.logs[member.index], self.results[member.index].dir = log, log.dir
        self.pbt = None
        if pbt is not None and members:
            self.pbt = Exploiter(
                pbt,
                self,
                epochs=int(train.epochs),
                direction=self.direction,
                notes=[] if notes is None else notes,
            )
            self.pbt.record_final()

    def _column(self, key: str, dtype: torch.dtype) -> Tensor:
        """Every member's value of ``key`` as a (P,) tensor (None: inf)."""
        values = [math.inf if v is None else float(v) for v in (m.get(key) for m in self.members)]
        return torch.tensor(values, dtype=dtype, device=self.device)

    # --- the loop -----------------------------------------------------------------
    def run(self) -> None:
        """Train every epoch (or until every member stopped); write the run dirs."""
        chance = chance_loss(self.task) if self.logs else None
        for row, member in enumerate(self.members):
            if member.index in self.logs:
                self.logs[member.index].start(
                    steps_per_epoch=self.steps_per_epoch,
                    chance_loss=chance,
                    row=row,
                    size=len(self.members),
                    engine=self.engine.name,
                )
        for epoch in range(1, int(self.config.train.epochs) + 1):  # whole (checked)
            if not self.members:
                break
            self._end_epoch(epoch, self._train_epoch())
        for log in self.logs.values():
            log.finish()

    def _train_epoch(self) -> EpochTrace:
        """One pass over the training data; the per-step values, on the host."""
        rows = [True] * len(self.members) if self.pbt is None else self.pbt.active()
        active = torch.tensor(rows, dtype=torch.bool, device=self.device)
        first = self.step
        values, lrs, mus, sizes = [], [], [], []
        stack = self.stack
        for batch in self.data:
            hp, lr, mu = self.hp.at(self.step)
            losses, live, grads = self.engine.grads(
                stack.params, stack.buffers, batch, self.reg, active
            )
            if self.clip is not None:
                grads = _clip(grads, self.clip)
            params, state = rules.step(self.rule, stack.params, grads, stack.state, **hp)
            assert isinstance(params, dict)  # a dict in, a dict out
            stack.update(params, state, live)
            active = live
            stat, scored = self._score(losses.out, batch)
            values.append(torch.stack([losses.data, losses.reg, live, stat, scored]).double())
            lrs.append(lr)
            mus.append(mu)
            sizes.append(batch[0].shape[1] if batch[2] else batch[0].shape[0])
            self.step += 1
        return EpochTrace(  # (S, 5, P): one copy to the host per epoch
            torch.stack(values).cpu(), lrs, mus, sizes, first, self.steps_per_epoch
        )

    def _score(self, out: Tensor, batch: Batch) -> tuple[Tensor, Tensor]:
        """Each member's score statistic on the batch (e.g. correct predictions) and the
        positions it scored, (P,) each (evaluate.SCORES)."""
        if self.score is None:
            zeros = torch.zeros(out.shape[0], dtype=out.dtype, device=out.device)
            return zeros, zeros
        _, y, per_member = batch
        if self.stacked_score is not None and out.ndim == 3:  # (P, B, C): rows of scores
            stat, scored = self.stacked_score.stacked(out, y, ignore_index=self.ignore_index)
        else:
            fn = partial(self.score, ignore_index=self.ignore_index)
            stat, scored = vmap(fn, in_dims=(0, 0 if per_member else None))(out, y)
        return stat.to(out.dtype), scored.to(out.dtype)

    @torch.no_grad()
    def _validate(self) -> tuple[list[float], list[float]]:
        """Each member's mean validation data loss and score (the loss itself for "loss")."""
        n_rows = len(self.members)
        loss_sum = torch.zeros(n_rows, dtype=torch.float64, device=self.device)
        stat_sum = torch.zeros(n_rows, dtype=torch.float64, device=self.device)
        scored_sum = torch.zeros(n_rows, dtype=torch.float64, device=self.device)
        n = 0
        for x, y in self.val:
            losses = self.engine.evaluate(self.stack.params, self.stack.buffers, x, y)
            loss_sum += losses.data.double() * x.shape[0]
            stat, scored = self._score(losses.out, (x, y, False))
            stat_sum += stat.double()
            scored_sum += scored.double()
            n += x.shape[0]
        mean = (loss_sum / max(n, 1)).tolist()
        if self.score is None:
            return mean, mean
        return mean, (stat_sum / scored_sum.clamp(min=1)).tolist()

    # --- the epoch's end ------------------------------------------------------------
    def _end_epoch(self, epoch: int, trace: EpochTrace) -> None:
        """Per member what the trainer does after an epoch; then write and drop the stopped."""
        val_loss, val_value = self._validate()
        records: dict[int, dict[str, Any]] = {}
        for row, member in enumerate(self.members):
            result = self.results[member.index]
            dead = trace.dead(row)
            if dead is not None or (self.pbt is not None and not math.isfinite(val_value[row])):
                step = self.step if dead is None else trace.first + dead + 1
                if self.pbt is None or not self.pbt.wait(member.index, step, epoch):
                    result.stopped, result.diverged_step = "diverged", step
                continue
            train_loss, train_stat = trace.train_scores(row)
            record = {
                "epoch": epoch,
                "train_loss": train_loss,
                f"train_{self.task.metric}": train_stat if self.score is not None else train_loss,
                "val_loss": val_loss[row],
                self.metric_key: val_value[row],
            }
            records[member.index] = record
            result.epochs.append(record)
            best = result.best.get(self.metric_key)
            if math.isfinite(val_value[row]) and is_better(val_value[row], best, self.direction):
                result.best = record
            self._early_stop(row, result, epoch)
        self.hp.end_epoch(val_value, mode=self.direction)
        if self.on_epoch is not None and records:
            for index in self.on_epoch(epoch, records):
                if index in records and self.results[index].stopped is None:
                    self.results[index].stopped = "pruned"
        self._write(epoch, trace, records)
        if self.pbt is not None:
            self.pbt.record_final()
        self._drop_stopped()
        if self.pbt is not None:
            self.pbt.exploit(epoch, {i: r[self.metric_key] for i, r in records.items()})
            for index, step in self.pbt.settle(epoch).items():
                self.results[index].stopped, self.results[index].diverged_step = "diverged", step
            self._drop_stopped()

    def _early_stop(self, row: int, result: MemberResult, epoch: int) -> None:
        """EarlyStopping: stop after ``patience`` epochs in a row without a new best."""
        best_epoch = result.best.get("epoch")
        self.bad_epochs[row] = 0 if best_epoch == epoch else self.bad_epochs[row] + 1
        patience = self.patience[row]
        if patience is not None and self.bad_epochs[row] >= patience:
            result.stopped = "early_stop"

    def _write(self, epoch: int, trace: EpochTrace, records: dict[int, dict[str, Any]]) -> None:
        """Each member's records of the epoch, checkpoint and stop event (with ``out``)."""
        if not self.logs:
            return
        tensors = {**self.stack.params, **self.stack.buffers}
        host = {k: tensors[k].detach().cpu() for k in self.stack.state_keys}
        for row, member in enumerate(self.members):
            if self.pbt is not None and self.pbt.frozen_before(member.index, trace.first):
                continue  # frozen since an earlier epoch, waiting to be replaced
            result = self.results[member.index]
            dead = trace.dead(row)
            lines = trace.batch_records(row, dead)
            if dead is not None:
                lines.append(trace.diverged(row, dead, epoch))
            record = records.get(member.index)
            self.logs[member.index].end_epoch(
                lines,
                epoch=epoch,
                step=self.step,
                scores=None
                if record is None
                else {k: v for k, v in record.items() if k != "epoch"},
                state=None if record is None else self._checkpoint(row, epoch, host),
                stopped=result.stopped,
                best_epoch=result.best.get("epoch"),
            )

    def _checkpoint(self, row: int, epoch: int, host: dict[str, Tensor]) -> dict[str, Any]:
        """A member checkpoint (clones: a view would save every member's storage)."""
        member = self.members[row]
        return {
            "model": {k: v[row].clone() for k, v in host.items()},
            "epoch": epoch,
            "step": self.step,
            "best": dict(self.results[member.index].best),
            "config": self.logs[member.index].config_toml,
            "population": {
                "member": member.index,
                "rule": self.rule,
                **self.stack.member_slots(row),
                "hparams": self.hp.member(row),
                "engine": self.engine.name,
            },
        }

    def _drop_stopped(self) -> None:
        """Remove the rows of members that stopped: the rest train on, unchanged."""
        keep = [r for r, m in enumerate(self.members) if self.results[m.index].stopped is None]
        if len(keep) == len(self.members):
            return
        rows = torch.tensor(keep, dtype=torch.long, device=self.device)
        self.stack.select(rows)
        self.data.select(rows)
        self.reg = self.reg.index_select(0, rows)
        self.clip = None if self.clip is None else self.clip.index_select(0, rows)
        self.hp.select(keep)
        if self.pbt is not None:
            self.pbt.select(keep)
        self.members = [self.members[r] for r in keep]
        self.patience = [self.patience[r] for r in keep]
        self.bad_epochs = [self.bad_epochs[r] for r in keep]
