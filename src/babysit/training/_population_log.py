"""A member's run dir: what a single run writes, so reports and ensembles read it unchanged.

    <dir>/config.toml      the member's whole config (the base with its overrides)
    <dir>/metrics.jsonl    batch, epoch and event records (monitor/log.py's constructors)
    <dir>/checkpoints/     epoch=007-val_acc=0.9412.pt, pruned by keep_best / keep_last
    <dir>/findings.json    the diagnoses of its metrics, at the end

(``<out>/m<i>`` by default, ``<out>/<names[i]>`` when the caller names them.)

A member's metrics start with a ``watch`` event (steps_per_epoch and chance_loss, as the
monitor writes; no probes run in a population, so no ``every``) and a ``population``
event (member, size, engine). Records are appended once per epoch (the trainer flushes
at every epoch end too); the file is opened and closed each time, so thousands of
members never hold thousands of open files.

A member checkpoint holds ``model`` (its state_dict, loadable by the task's model with
``torch.load(weights_only=True)``), ``epoch``, ``step``, ``best``, ``config`` and
``population``: the rule, its state slots for this member and the member's
hyperparameters. It has no torch.optim state, so ``babysit train --resume`` cannot
continue it.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from babysit._io import write_text_atomic
from babysit.config import Config
from babysit.errors import ConfigError
from babysit.monitor.diagnose import diagnose, write_findings
from babysit.monitor.log import (
    MetricsWriter,
    Record,
    batch_record,
    epoch_record,
    event_record,
    read_metrics,
)
from babysit.training._population_members import Member
from babysit.training.checkpoint import checkpoint_name, prune_checkpoints, save_checkpoint
from babysit.training.rundir import check_new_run_dir

__all__ = ["EpochTrace", "MemberLog", "member_dirs"]


def member_dirs(out: Path, count: int, names: Sequence[str] | None) -> dict[int, Path]:
    """Each member's run dir in ``out``, checked (new or empty, writable) before training."""
    if names is None:
        names = [f"m{i}" for i in range(count)]
    if len(names) != count or len(set(names)) != count:
        raise ConfigError(f"population: names must be {count} different names, one per member")
    for name in names:
        if not name or Path(name).name != name or name in (".", ".."):
            raise ConfigError(f"population: name {name!r} is not a plain directory name")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: is a file, expected a directory for the population")
    dirs = {i: out / name for i, name in enumerate(names)}
    for directory in dirs.values():
        check_new_run_dir(directory)
    return dirs


@dataclass(frozen=True)
class EpochTrace:
    """An epoch's per-step values of every member, on the host (one copy per epoch).

    values: (S, 5, P): data loss, penalty, live (1: the member took the step), score
    statistic (e.g. correct predictions), positions scored; lr, mu: per step, one value
    per member (mu None for rules without momentum); sizes: the minibatch sizes; first:
    steps before the epoch.
    """

    values: Tensor
    lr: list[list[float]]
    mu: list[list[float] | None]
    sizes: list[int]
    first: int
    steps_per_epoch: int

    def dead(self, row: int) -> int | None:
        """The index (in the epoch) of the step at which member ``row`` diverged, or None."""
        live = self.values[:, 2, row]
        return None if bool(live.all()) else int((live == 0).nonzero()[0])

    def train_scores(self, row: int) -> tuple[float, float]:
        """(mean data loss, score) of the epoch's minibatches (the trainer's train_loss and
        train_<metric>: batch losses weighted by batch size; the statistic summed over the
        epoch per position scored)."""
        sizes = torch.tensor(self.sizes, dtype=torch.float64)
        n = float(sizes.sum())
        column = self.values[:, :, row]
        scored = max(float(column[:, 4].sum()), 1.0)
        return float((column[:, 0] * sizes).sum() / n), float(column[:, 3].sum() / scored)

    def batch_records(self, row: int, upto: int | None) -> list[Record]:
        """Member ``row``'s batch records, as the monitor writes them (steps before ``upto``)."""
        out: list[Record] = []
        values = self.values[:, :2, row].tolist()
        for s in range(len(values) if upto is None else upto):
            data, reg = values[s]
            step, mu = self.first + s + 1, self.mu[s]
            out.append(
                batch_record(
                    step,
                    data + reg,
                    epoch=step / self.steps_per_epoch,
                    data_loss=data,
                    reg_loss=reg,
                    lr=self.lr[s][row],
                    mu=None if mu is None else mu[row],
                )
            )
        return out

    def diverged(self, row: int, dead: int, epoch: int) -> Record:
        """The trainer's event: the step whose loss is NaN/inf (it took no update)."""
        loss = float(self.values[dead, 0, row] + self.values[dead, 1, row])
        return event_record(
            self.first + dead + 1,
            "diverged",
            loss=loss,
            lr=self.lr[dead][row],
            epoch=epoch - 1 + dead / self.steps_per_epoch,
        )


class MemberLog:
    """Writes one member's run dir."""

    def __init__(
        self,
        directory: Path,
        *,
        member: int,
        config_toml: str,
        metric_key: str,
        direction: str,
        keep_best: int,
        keep_last: int,
    ) -> None:
        self.dir, self.member = directory, member
        self.config_toml = config_toml
        self.metric_key, self.direction = metric_key, direction
        self.keep_best, self.keep_last = keep_best, keep_last

    @classmethod
    def of(cls, member: Member, directory: Path, *, metric_key: str, direction: str) -> MemberLog:
        """The log of ``member`` in ``directory`` (its whole config checked here)."""
        config = Config.from_dict(member.config_dict(), source=str(directory))
        return cls(
            directory,
            member=member.index,
            config_toml=config.to_toml(),
            metric_key=metric_key,
            direction=direction,
            keep_best=config.train.keep_best,
            keep_last=config.train.keep_last,
        )

    def start(
        self, *, steps_per_epoch: int, chance_loss: float | None, row: int, size: int, engine: str
    ) -> None:
        """Create the dir afresh (a retried chunk starts over): config.toml, the first records."""
        if self.dir.exists():
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True)
        write_text_atomic(self.dir / "config.toml", self.config_toml)
        self.write(
            [
                event_record(0, "watch", steps_per_epoch=steps_per_epoch, chance_loss=chance_loss),
                event_record(
                    0, "population", member=self.member, row=row, size=size, engine=engine
                ),
            ]
        )

    def write(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Append records to metrics.jsonl."""
        with MetricsWriter(self.dir / "metrics.jsonl", flush_every=float("inf")) as writer:
            for record in records:
                writer.write(record)

    def checkpoint(self, epoch: int, value: float, state: dict[str, Any]) -> str:
        """Save the epoch's checkpoint, prune the others; return its file name."""
        directory = self.dir / "checkpoints"
        path = save_checkpoint(directory / checkpoint_name(epoch, self.metric_key, value), state)
        prune_checkpoints(
            directory, keep_best=self.keep_best, keep_last=self.keep_last, direction=self.direction
        )
        return path.name

    def end_epoch(
        self,
        records: list[Record],
        *,
        epoch: int,
        step: int,
        scores: Mapping[str, Any] | None,
        state: dict[str, Any] | None,
        stopped: str | None,
        best_epoch: int | None,
    ) -> None:
        """Append the epoch: its batch records, then (when it finished the epoch) the epoch
        record, the checkpoint and its event, and the stop event: the trainer's order."""
        out = list(records)
        if scores is not None and state is not None:
            out.append(epoch_record(epoch, step, **scores))
            name = self.checkpoint(epoch, float(scores[self.metric_key]), state)
            out.append(event_record(step, "checkpoint", path=name))
            if stopped is not None:
                out.append(event_record(step, stopped, epoch=epoch, best_epoch=best_epoch))
        self.write(out)

    def finish(self) -> None:
        """Diagnose the member's metrics and write findings.json."""
        write_findings(
            self.dir / "findings.json", diagnose(read_metrics(self.dir / "metrics.jsonl"))
        )
