"""What runs around the loop: the optional gates before it, resume, findings and report after it.

Nothing here prints: results go to the trainer's callbacks (``on_check_end``, ``on_run_end``),
which render them (the progress callback) or not (``quiet``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from babysit._io import write_json_atomic
from babysit.checks.gates import GATES
from babysit.errors import CheckpointError
from babysit.monitor.diagnose import diagnose, write_findings
from babysit.monitor.log import EPOCH, MetricsWriter, read_metrics, rewrite_metrics
from babysit.training.checkpoint import list_checkpoints, load_checkpoint
from babysit.training.trainer import Trainer

__all__ = ["after_training", "before_training", "resume"]


def before_training(trainer: Trainer) -> str | None:
    """Run the checks the config switches on (train.sanity, train.gradcheck); a failed one's name.

    Each report is saved as ``<name>.json`` in the run dir (the HTML report shows it).
    """
    for check in GATES.values():
        if not getattr(trainer.config.train, check.name):
            continue
        report = check.run(trainer.task, trainer.config)
        write_json_atomic(trainer.run_dir / f"{check.name}.json", report.to_dict())
        for cb in trainer.callbacks:
            cb.on_check_end(trainer, check.name, report)
        if not report.passed:
            trainer.log_event(f"{check.name}_failed")
            return check.name
    return None


def resume(trainer: Trainer) -> None:
    """Load the run's newest checkpoint into ``trainer`` and cut metrics.jsonl back to it."""
    latest = list_checkpoints(trainer.run_dir / "checkpoints")[-1]
    try:
        trainer.load_state_dict(load_checkpoint(latest.path))
    except KeyError as exc:
        raise CheckpointError(
            f"{latest.path}: has no {exc} entry (written by another babysit version?); "
            "start a new run"
        ) from None
    if (
        trainer.epoch < trainer.last_epoch
        and trainer.step != trainer.epoch * trainer.steps_per_epoch
    ):
        raise CheckpointError(
            f"{latest.path}: ends within epoch {trainer.epoch} (a fractional train.epochs), so "
            "later epochs cannot continue it; start a new run"
        )
    trainer.writer.close()
    path = trainer.run_dir / "metrics.jsonl"
    rewrite_metrics(path, [r for r in read_metrics(path) if _before(r, trainer)])
    trainer.writer = MetricsWriter(path)
    trainer.log_event("resumed", epoch=trainer.epoch, checkpoint=latest.path.name)


def _before(record: Mapping[str, Any], trainer: Trainer) -> bool:
    """Keep records up to the checkpoint being resumed from (drop the epoch in flight)."""
    if record.get("kind") == EPOCH:
        return int(record["epoch"]) <= trainer.epoch
    return int(record.get("step", 0)) <= trainer.step


def after_training(trainer: Trainer) -> list[dict[str, Any]]:
    """Diagnose the run, write findings.json (most severe first) and the HTML report."""
    findings = diagnose(read_metrics(trainer.run_dir / "metrics.jsonl"))
    write_findings(trainer.run_dir / "findings.json", findings)
    report = None
    if trainer.config.train.report:
        from babysit.report.html import write_report  # matplotlib: only when asked for

        report = write_report(trainer.run_dir)
    for cb in trainer.callbacks:
        cb.on_run_end(trainer, findings, report)
    return [f.to_dict() for f in findings]
