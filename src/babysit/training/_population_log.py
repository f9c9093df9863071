"""A member's run dir: what a single run writes, so reports and ensembles read it unchanged.

    <out>/m<i>/config.toml      the member's whole config (the base with its overrides)
    <out>/m<i>/metrics.jsonl    batch, epoch and event records (monitor/log.py's constructors)
    <out>/m<i>/checkpoints/     epoch=007-val_acc=0.9412.pt, pruned by keep_best / keep_last
    <out>/m<i>/findings.json    the diagnoses of its metrics, at the end

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
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from babysit._io import write_text_atomic
from babysit.monitor.diagnose import diagnose, write_findings
from babysit.monitor.log import MetricsWriter, read_metrics
from babysit.training.checkpoint import checkpoint_name, prune_checkpoints, save_checkpoint

__all__ = ["MemberLog", "member_dir"]


def member_dir(out: Path, index: int) -> Path:
    """``<out>/m<index>``: the run dir of member ``index`` (its place in the caller's list)."""
    return out / f"m{index}"


class MemberLog:
    """Writes one member's run dir."""

    def __init__(
        self,
        directory: Path,
        *,
        config_toml: str,
        metric_key: str,
        direction: str,
        keep_best: int,
        keep_last: int,
    ) -> None:
        self.dir = directory
        self.config_toml = config_toml
        self.metric_key, self.direction = metric_key, direction
        self.keep_best, self.keep_last = keep_best, keep_last

    def start(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Create the dir afresh (a retried chunk starts over), write config.toml and records."""
        if self.dir.exists():
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True)
        write_text_atomic(self.dir / "config.toml", self.config_toml)
        self.write(records)

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

    def finish(self) -> None:
        """Diagnose the member's metrics and write findings.json."""
        write_findings(
            self.dir / "findings.json", diagnose(read_metrics(self.dir / "metrics.jsonl"))
        )
