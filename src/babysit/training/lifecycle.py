"""What runs around the loop: the optional gates before it, resume, findings and report after it.

Nothing here prints: results go to the trainer's callbacks (``on_check_end``, ``on_run_end``),
which render them (the progress callback) or not (``quiet``).
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

from babysit._io import write_json_atomic
from babysit.checks.gates import GATES
from babysit.config import differing_keys
from babysit.errors import CheckpointError, RunDirError
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
    """Load the run's newest checkpoint into ``trainer`` and cut metrics.jsonl back to it.

    A checkpoint that does not fit the run (another task, model or update rule; a part
    missing or of the wrong shape) is a CheckpointError naming it and why; a missing or
    damaged metrics.jsonl is a RunDirError naming the file and line. Either way nothing
    has been written yet.
    """
    latest = list_checkpoints(trainer.run_dir / "checkpoints")[-1]
    state = load_checkpoint(latest.path)
    _check_written_by_this_run(latest.path, state, trainer)
    try:
        trainer.load_state_dict(state)
    except KeyError as exc:
        raise CheckpointError(
            f"{latest.path}: has no {exc} entry (written by another babysit version?); "
            "start a new run"
        ) from None
    except (ValueError, RuntimeError, TypeError, IndexError, AttributeError) as exc:
        lines = [line.strip().rstrip(":") for line in str(exc).splitlines() if line.strip()]
        detail = ": ".join(lines[:2])[:300] or type(exc).__name__
        raise CheckpointError(
            f"{latest.path}: does not fit this run ({detail}); resume it with the config "
            "that wrote it, or start a new run"
        ) from None
    if (
        trainer.epoch < trainer.last_epoch
        and trainer.step != trainer.epoch * trainer.steps_per_epoch
    ):
        raise CheckpointError(
            f"{latest.path}: ends within epoch {trainer.epoch} (a fractional train.epochs), so "
            "later epochs cannot continue it; start a new run"
        )
    path = trainer.run_dir / "metrics.jsonl"
    if not path.is_file():
        what = "not a file" if path.exists() else "missing"
        raise RunDirError(
            f"{path}: {what}, so the log of epochs 1-{trainer.epoch} is lost; put it back to "
            "resume, or start a new run"
        )

    def refuse(line: int, reason: str) -> NoReturn:
        raise RunDirError(f"{path}: line {line} is {reason}; delete that line to resume")

    kept = [r for r in read_metrics(path, on_bad=refuse) if _before(r, trainer)]
    trainer.writer.close()
    rewrite_metrics(path, kept)
    trainer.writer = MetricsWriter(path)
    trainer.log_event("resumed", epoch=trainer.epoch, checkpoint=latest.path.name)


def _check_written_by_this_run(path: Path, state: Mapping[str, Any], trainer: Trainer) -> None:
    """Refuse a checkpoint whose config names another task, model table or update rule.

    The checkpoint carries the config that wrote it (TOML text); one it cannot be read
    from is judged by loading it alone.
    """
    try:
        saved = tomllib.loads(str(state.get("config", "")))
    except (tomllib.TOMLDecodeError, RecursionError):
        return
    if not saved:
        return
    ours = trainer.config.to_dict()
    pairs = {
        "task.name": (_table(saved, "task").get("name"), ours["task"]["name"]),
        "optim.rule": (_table(saved, "optim").get("rule"), ours["optim"]["rule"]),
    }
    differ = [k for k, (a, b) in pairs.items() if a != b]
    differ += differing_keys({"model": _table(saved, "model")}, {"model": ours["model"]})
    if differ:
        shown = [f"{k} = {pairs[k][0]!r} there, {pairs[k][1]!r} here" for k in differ if k in pairs]
        detail = f" ({'; '.join(shown)})" if shown else ""
        raise CheckpointError(
            f"{path}: was written by a run with another {', '.join(differ)} than "
            f"{trainer.run_dir / 'config.toml'} says{detail}; "
            "resume with the config that wrote it, or start a new run"
        )


def _table(config: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    table = config.get(name)
    return table if isinstance(table, dict) else {}


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
