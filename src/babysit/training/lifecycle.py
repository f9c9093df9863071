"""What runs around the loop: the optional gates before it, findings and report after it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from babysit._io import write_json_atomic

if TYPE_CHECKING:
    from babysit.training.trainer import Trainer

__all__ = ["after_training", "before_training"]


def before_training(trainer: Trainer, *, quiet: bool) -> str | None:
    """Run the checks the config switches on (train.sanity, train.gradcheck); a failed one's name.

    Each report is saved as ``<name>.json`` in the run dir (the HTML report shows it).
    """
    from babysit.checks.gates import GATES as CHECKS

    for check in CHECKS.values():
        if not getattr(trainer.config.train, check.name):
            continue
        report = check.run(trainer.task, trainer.config)
        write_json_atomic(trainer.run_dir / f"{check.name}.json", report.to_dict())
        if not quiet:
            print(report)
        if not report.passed:
            trainer.log_event(f"{check.name}_failed")
            return check.name
    return None


def after_training(trainer: Trainer, *, quiet: bool) -> list[dict[str, Any]]:
    """Diagnose the run, write findings.json (most severe first) and the HTML report."""
    from babysit.monitor.diagnose import diagnose, write_findings
    from babysit.monitor.log import read_metrics

    findings = diagnose(read_metrics(trainer.run_dir / "metrics.jsonl"))
    write_findings(trainer.run_dir / "findings.json", findings)
    if not quiet:
        for f in findings:
            print(f"[{f.severity}] {f.code}: {f.message} -> {f.advice}")
    if trainer.config.train.report:
        from babysit.report.html import write_report

        path = write_report(trainer.run_dir)
        if not quiet:
            print(f"babysit: report written to {path}")
    return [f.to_dict() for f in findings]
