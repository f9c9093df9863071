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
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.func import vmap

from babysit.checks.sanity.chance import chance_loss
from babysit.config import Config
from babysit.monitor.log import Record, batch_record, epoch_record, event_record
from babysit.optim import rules
from babysit.splits import Batches
from babysit.tasks import Task
from babysit.training._population_engines import Engine
from babysit.training._population_hparams import MemberHParams
from babysit.training._population_log import MemberLog, member_dir
from babysit.training._population_members import Member, MemberResult
from babysit.training._population_model import Stack
from babysit.training.callbacks import is_better
from babysit.training.evaluate import SCORES

__all__ = ["OnEpoch", "PopulationLoop"]

# (epoch, {member index: its epoch record}) -> the indices of members to stop ("pruned")
OnEpoch = Callable[[int, Mapping[int, dict[str, Any]]], Iterable[int]]
Batch = tuple[Tensor, Tensor, bool]  # x, y, and whether they carry a member dimension


def _rows(mask: Tensor, x: Tensor) -> Tensor:
    """A (P,) mask shaped to broadcast against x (P, ...)."""
    return mask.view(-1, *([1] * (x.ndim - 1)))


def _clip(grads: dict[str, Tensor], max_norm: Tensor) -> dict[str, Tensor]:
    """torch's clip_grad_norm_, per member: g * min(1, max_norm / (||g||_total + 1e-6))."""
    norms = torch.stack([g.flatten(1).norm(dim=1) for g in grads.values()]).norm(dim=0)
    coef = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    return {k: g * _rows(coef, g) for k, g in grads.items()}


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
        out: Path | None,
        on_epoch: OnEpoch | None,
        results: Mapping[int, MemberResult],
    ) -> None:
        self.task, self.config, self.device, self.engine = task, config, device, engine
        self.members = list(members)  # row -> member; rows drop out as members stop
        self.results, self.on_epoch = results, on_epoch
        self.params, self.buffers, self.state_keys = stack.params, stack.buffers, stack.state_keys
        self.rule = config.optim.rule
        self.state = rules.init_state(self.rule, self.params)
        dtype = next(iter(self.params.values())).dtype
        seeds = sorted({m.seed for m in members})
        train = config.train
        self.train = [  # one data order per seed: the trainer's for that seed
            Batches(
                task.train,
                train.batch_size,
                shuffle=True,
                generator=torch.Generator().manual_seed(seed),
                device=device,
                name="train",
            )
            for seed in seeds
        ]
        self.seed_rows = torch.tensor([seeds.index(m.seed) for m in members], device=device)
        self.val = Batches(
            task.val, train.eval_batch_size, shuffle=False, device=device, name="val"
        )
        self.steps_per_epoch = len(self.train[0])
        kind = config.schedule.kind
        self.hp = MemberHParams(
            self.rule,
            kind,
            members,
            steps_per_epoch=self.steps_per_epoch,
            dtype=dtype,
            device=device,
        )
        self.reg = self._column("train.reg", dtype)
        clips = [m.get("train.clip_grad") for m in members]
        self.clip = (
            None if all(c is None for c in clips) else self._column("train.clip_grad", dtype)
        )
        self.patience: list[int | None] = [m.get("train.early_stop") for m in members]
        self.bad_epochs = [0] * len(members)
        self.score = SCORES.get(task.metric)
        self.metric_key = f"val_{task.metric}"
        self.step = 0
        self.logs = {m.index: self._log(m, out) for m in members} if out is not None else {}

    def _column(self, key: str, dtype: torch.dtype) -> Tensor:
        values = [math.inf if v is None else float(v) for v in (m.get(key) for m in self.members)]
        return torch.tensor(values, dtype=dtype, device=self.device)

    def _log(self, member: Member, out: Path) -> MemberLog:
        directory = member_dir(out, member.index)
        self.results[member.index].dir = directory
        return MemberLog(
            directory,
            config_toml=Config.from_dict(member.config_dict(), source=str(directory)).to_toml(),
            metric_key=self.metric_key,
            direction=self.task.direction,
            keep_best=int(member.get("train.keep_best")),
            keep_last=int(member.get("train.keep_last")),
        )

    # --- the loop -----------------------------------------------------------------
    def run(self) -> None:
        """Train every epoch (or until every member stopped); write the run dirs."""
        chance = chance_loss(self.task) if self.logs else None
        for row, member in enumerate(self.members):
            if member.index in self.logs:
                self.logs[member.index].start(
                    [
                        event_record(
                            0, "watch", steps_per_epoch=self.steps_per_epoch, chance_loss=chance
                        ),
                        event_record(
                            0,
                            "population",
                            member=member.index,
                            row=row,
                            size=len(self.members),
                            engine=self.engine.name,
                        ),
                    ]
                )
        for epoch in range(1, self.config.train.epochs + 1):
            if not self.members:
                break
            self._end_epoch(epoch, self._train_epoch())
        for log in self.logs.values():
            log.finish()

    def _batches(self) -> Iterator[Batch]:
        """Each step's minibatch: shared (B, ...) with one seed, else (P, B, ...) per member."""
        if len(self.train) == 1:
            for x, y in self.train[0]:
                yield x, y, False
            return
        for parts in zip(*self.train, strict=True):
            x = torch.stack([p[0] for p in parts]).index_select(0, self.seed_rows)
            y = torch.stack([p[1] for p in parts]).index_select(0, self.seed_rows)
            yield x, y, True

    def _train_epoch(self) -> dict[str, Any]:
        """One pass over the training data; the per-step values, on the host."""
        active = torch.ones(len(self.members), dtype=torch.bool, device=self.device)
        trace, lrs, mus, sizes = [], [], [], []
        for batch in self._batches():
            hp, lr, mu = self.hp.at(self.step)
            losses, live, grads = self.engine.grads(
                self.params, self.buffers, batch, self.reg, active
            )
            if self.clip is not None:
                grads = _clip(grads, self.clip)
            params, state = rules.step(self.rule, self.params, grads, self.state, **hp)
            assert isinstance(params, dict)  # a dict in, a dict out
            self._keep(params, state, live)
            active = live
            correct = self._correct(losses.out, batch)
            trace.append(torch.stack([losses.data, losses.reg, live, correct]).double())
            lrs.append(lr)
            mus.append(mu)
            sizes.append(batch[0].shape[1] if batch[2] else batch[0].shape[0])
            self.step += 1
        steps = torch.stack(trace).cpu()  # (S, 4, P): one copy to the host per epoch
        return {"steps": steps, "lr": lrs, "mu": mus, "sizes": sizes}

    def _keep(self, params: dict[str, Tensor], state: dict[str, Any], live: Tensor) -> None:
        """Take the new weights and state, except in rows that are not live (frozen)."""
        if self.device.type == "cpu" and bool(live.all()):  # a free check on the CPU
            self.params, self.state = dict(params), state
            return

        def keep(new: Tensor, old: Tensor) -> Tensor:
            return torch.where(_rows(live, new), new, old)

        self.params = {k: keep(v, self.params[k]) for k, v in params.items()}
        self.state = {
            slot: {k: keep(v, self.state[slot][k]) for k, v in value.items()}
            if isinstance(value, dict)
            else value
            for slot, value in state.items()
        }

    def _correct(self, out: Tensor, batch: Batch) -> Tensor:
        """Each member's score statistic on the batch (e.g. correct predictions), (P,)."""
        if self.score is None:
            return torch.zeros(out.shape[0], dtype=out.dtype, device=out.device)
        _, y, per_member = batch
        return vmap(self.score, in_dims=(0, 0 if per_member else None))(out, y).to(out.dtype)

    @torch.no_grad()
    def _validate(self) -> tuple[list[float], list[float]]:
        """Each member's mean validation data loss and score (the loss itself for "loss")."""
        n_rows = len(self.members)
        loss_sum = torch.zeros(n_rows, dtype=torch.float64, device=self.device)
        stat_sum = torch.zeros(n_rows, dtype=torch.float64, device=self.device)
        n = 0
        for x, y in self.val:
            losses = self.engine.evaluate(self.params, self.buffers, x, y)
            loss_sum += losses.data.double() * x.shape[0]
            stat_sum += self._correct(losses.out, (x, y, False)).double()
            n += x.shape[0]
        mean = (loss_sum / max(n, 1)).tolist()
        return mean, (stat_sum / max(n, 1)).tolist() if self.score is not None else mean

    # --- the epoch's end ------------------------------------------------------------
    def _end_epoch(self, epoch: int, trace: dict[str, Any]) -> None:
        val_loss, val_value = self._validate()
        steps = trace["steps"]
        first = self.step - steps.shape[0]  # steps taken before this epoch
        records: dict[int, dict[str, Any]] = {}
        lines: dict[int, list[Record]] = {}
        for row, member in enumerate(self.members):
            result = self.results[member.index]
            column = steps[:, :, row]  # (S, 4): data, reg, live, correct
            dead = int((column[:, 2] == 0).nonzero()[0]) if not bool(column[:, 2].all()) else None
            lines[member.index] = self._batch_records(row, first, column, trace, dead)
            if dead is not None:
                self._diverge(result, lines[member.index], row, first, column, trace, dead, epoch)
                continue
            n = sum(trace["sizes"])
            sizes = torch.tensor(trace["sizes"], dtype=torch.float64)
            train_loss = float((column[:, 0] * sizes).sum() / n)
            train_value = float(column[:, 3].sum() / n) if self.score is not None else train_loss
            record = {
                "epoch": epoch,
                "train_loss": train_loss,
                f"train_{self.task.metric}": train_value,
                "val_loss": val_loss[row],
                self.metric_key: val_value[row],
            }
            records[member.index] = record
            result.epochs.append(record)
            value = val_value[row]
            if math.isfinite(value) and is_better(
                value, result.best.get(self.metric_key), self.task.direction
            ):
                result.best = record
            self._early_stop(row, result, epoch)
        self.hp.end_epoch(val_value, mode=self.task.direction)
        if self.on_epoch is not None and records:
            for index in self.on_epoch(epoch, records):
                if index in records and self.results[index].stopped is None:
                    self.results[index].stopped = "pruned"
        self._write(epoch, records, lines)
        self._drop_stopped()

    def _batch_records(
        self, row: int, first: int, column: Tensor, trace: dict[str, Any], dead: int | None
    ) -> list[Record]:
        """The member's batch records of this epoch (up to the step it diverged at)."""
        out: list[Record] = []
        spe = self.steps_per_epoch
        values = column[:, :2].tolist()
        for s in range(column.shape[0] if dead is None else dead):
            data, reg = values[s]
            mu = trace["mu"][s]
            step = first + s + 1
            out.append(
                batch_record(
                    step,
                    data + reg,
                    epoch=step / spe,
                    data_loss=data,
                    reg_loss=reg,
                    lr=trace["lr"][s][row],
                    mu=None if mu is None else mu[row],
                )
            )
        return out

    def _diverge(
        self,
        result: MemberResult,
        lines: list[Record],
        row: int,
        first: int,
        column: Tensor,
        trace: dict[str, Any],
        dead: int,
        epoch: int,
    ) -> None:
        """The trainer's divergence: the step whose loss is NaN/inf took no update; stop."""
        loss = float(column[dead, 0] + column[dead, 1])
        result.stopped, result.diverged_step = "diverged", first + dead + 1
        lr = trace["lr"][dead][row]
        epoch_at = epoch - 1 + dead / self.steps_per_epoch
        lines.append(event_record(first + dead + 1, "diverged", loss=loss, lr=lr, epoch=epoch_at))

    def _early_stop(self, row: int, result: MemberResult, epoch: int) -> None:
        """EarlyStopping: stop after ``patience`` epochs in a row without a new best."""
        best_epoch = result.best.get("epoch")
        self.bad_epochs[row] = 0 if best_epoch == epoch else self.bad_epochs[row] + 1
        patience = self.patience[row]
        if patience is not None and self.bad_epochs[row] >= patience:
            result.stopped = "early_stop"

    def _write(
        self, epoch: int, records: dict[int, dict[str, Any]], lines: dict[int, list[Record]]
    ) -> None:
        """Each member's records of the epoch, checkpoint and stop event, in the trainer's order."""
        if not self.logs:
            return
        host = {k: v.detach().cpu() for k, v in {**self.params, **self.buffers}.items()}
        slots = {k: v for k, v in self.state.items() if isinstance(v, dict)}
        host_slots = {s: {k: v.detach().cpu() for k, v in d.items()} for s, d in slots.items()}
        for row, member in enumerate(self.members):
            log, result = self.logs[member.index], self.results[member.index]
            out = lines[member.index]
            record = records.get(member.index)
            if record is not None:
                out.append(
                    epoch_record(
                        epoch, self.step, **{k: v for k, v in record.items() if k != "epoch"}
                    )
                )
                state = self._checkpoint(row, member, epoch, host, host_slots)
                name = log.checkpoint(epoch, float(record[self.metric_key]), state)
                out.append(event_record(self.step, "checkpoint", path=name))
                if result.stopped is not None:
                    out.append(
                        event_record(
                            self.step,
                            result.stopped,
                            epoch=epoch,
                            best_epoch=result.best.get("epoch"),
                        )
                    )
            log.write(out)

    def _checkpoint(
        self,
        row: int,
        member: Member,
        epoch: int,
        host: dict[str, Tensor],
        slots: dict[str, dict[str, Tensor]],
    ) -> dict[str, Any]:
        """A member checkpoint (clones: a view would save every member's storage)."""
        result = self.results[member.index]
        return {
            "model": {k: host[k][row].clone() for k in self.state_keys},
            "epoch": epoch,
            "step": self.step,
            "best": dict(result.best),
            "config": self.logs[member.index].config_toml,
            "population": {
                "member": member.index,
                "rule": self.rule,
                "state": {s: {k: v[row].clone() for k, v in d.items()} for s, d in slots.items()},
                "t": int(self.state.get("t", 0)),
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

        def take(x: Tensor) -> Tensor:
            return x.index_select(0, rows)

        self.params = {k: take(v) for k, v in self.params.items()}
        self.buffers = {k: take(v) for k, v in self.buffers.items()}
        self.state = {
            s: {k: take(v) for k, v in d.items()} if isinstance(d, dict) else d
            for s, d in self.state.items()
        }
        self.reg, self.seed_rows = take(self.reg), take(self.seed_rows)
        self.clip = None if self.clip is None else take(self.clip)
        self.hp.select(keep)
        self.members = [self.members[r] for r in keep]
        self.patience = [self.patience[r] for r in keep]
        self.bad_epochs = [self.bad_epochs[r] for r in keep]
