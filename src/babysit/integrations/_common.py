"""What both framework adapters share: one :class:`Session` per fit, framework-free.

A session attaches :func:`babysit.watch` to the model and optimizer the framework built,
turns the framework's micro-batch losses into one record per optimizer step (the mean of the
micro-batches' losses, as the accumulated gradient is their mean's gradient), passes the
evaluation metrics to ``log_epoch`` under the names the diagnosis rules read (``val_acc``,
``val_loss``, ``train_acc``), runs the pre-training checks on the first batch, and at the end
writes findings.json and report.html. The adapters only translate hooks into these calls.
"""

from __future__ import annotations

import inspect
import math
import os
import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from babysit._io import write_json_atomic
from babysit.errors import BabysitError, ConfigError
from babysit.monitor._findings import Finding
from babysit.monitor.watch import DEFAULT_EVERY, Monitor, watch

__all__ = [
    "ChecksFailed",
    "MissingExtraError",
    "Session",
    "SessionOwner",
    "epoch_metrics",
    "logging_rank",
    "missing_extra",
]

# watch()'s options a user may pass through an adapter; the rest the adapter sets itself
_OWN = {"model", "optimizer", "log_dir", "writer", "steps_per_epoch", "start_step"}
WINDOWS = 10  # capture windows a short run gets at least (see Session.attach)
WATCH_OPTIONS = frozenset(inspect.signature(watch).parameters) - _OWN - {"write_findings"}


def logging_rank() -> bool:
    """True unless this is a DDP rank other than 0 (where the monitor writes nothing)."""
    dist = torch.distributed
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


class MissingExtraError(BabysitError, ImportError):
    """An adapter was imported without its framework installed (one line naming the extra)."""


class ChecksFailed(BabysitError):
    """A pre-training check (sanity or gradcheck) failed on the first batch: the fit stops."""


for _error in (MissingExtraError, ChecksFailed):
    _error.__module__ = "babysit.integrations"  # where users import them from


def missing_extra(framework: str, extra: str, adapter: str) -> MissingExtraError:
    """The one line for an adapter imported without its framework: the extra to install."""
    return MissingExtraError(
        f"{adapter} needs {framework}, which is not installed: pip install 'babysit[{extra}]'"
    )


_RENAMES = (  # framework spellings -> the names the diagnosis rules read
    (re.compile(r"^eval_"), "val_"),
    (re.compile(r"^validation_"), "val_"),
    (re.compile(r"_accuracy$"), "_acc"),
)
_SKIP = re.compile(r"(^|_)(epoch|step|runtime|samples_per_second|steps_per_second)$")


def epoch_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The scalar metrics, renamed for the rules: ``val/acc`` and ``eval_accuracy`` become
    ``val_acc``, ``eval_loss`` becomes ``val_loss``; counters and timings are left out (the
    monitor numbers epochs and steps itself)."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        if isinstance(value, Tensor):
            if value.numel() != 1:
                continue
            value = value.item()
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        name = key.replace("/", "_").replace(".", "_").lower()
        for pattern, new in _RENAMES:
            name = pattern.sub(new, name)
        if not _SKIP.search(name):
            out[name] = float(value)
    return out


class Session:
    """One fit's monitor, checks and report; every method is a no-op before attach / after
    finish, so a framework calling hooks in an unusual order cannot break the fit."""

    def __init__(
        self,
        log_dir: str | os.PathLike[str] | None,
        *,
        sanity: bool,
        gradcheck: bool,
        options: Mapping[str, Any],
        where: str,
    ) -> None:
        unknown = sorted(set(options) - WATCH_OPTIONS)
        if unknown:
            raise ConfigError(
                f"{where}: unknown option(s) {', '.join(unknown)}; "
                f"pass sanity=, gradcheck= or watch() options: {', '.join(sorted(WATCH_OPTIONS))}"
            )
        self.log_dir = None if log_dir is None else Path(log_dir)
        self.sanity, self.gradcheck = bool(sanity), bool(gradcheck)
        self.options = dict(options)
        self.where = where
        self.monitor: Monitor | None = None
        self.dir: Path | None = None
        self.report: Path | None = None
        self.findings: list[Finding] = []
        self.report_seconds = 0.0  # CPU time writing report.html took (its plots, mostly)
        self.finished = False
        self.checked = False  # the pre-training checks ran (or were not asked for)
        self._losses: list[Tensor | float] = []

    @property
    def wants_checks(self) -> bool:
        return (self.sanity or self.gradcheck) and not self.checked

    def attach(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None,
        default_dir: str | os.PathLike[str],
        *,
        steps_per_epoch: int | None = None,
        total_steps: float | None = None,
        start_step: int = 0,
    ) -> Monitor:
        """Start the monitor on ``model`` and ``optimizer`` in the log dir (given, or the
        framework's ``default_dir``).

        total_steps: the optimizer steps the fit will take, when the framework knows; a run
        shorter than ``WINDOWS x`` watch's default cadence gets a capture window every
        ``total_steps // WINDOWS`` steps (unless ``every`` is given), so that the rules that
        judge a half of the run (update ratios, dead units) read several windows in each.
        start_step: optimizer steps already taken (a resumed fit). A callback reused for a
        second fit starts afresh (same dir: its files are rewritten).
        """
        self.finished, self._losses, self.findings, self.report = False, [], [], None
        self.checked = not (self.sanity or self.gradcheck)
        self.dir = self.log_dir if self.log_dir is not None else Path(default_dir)
        options = dict(self.options)
        if "every" not in options and total_steps is not None and math.isfinite(total_steps):
            options["every"] = max(1, min(DEFAULT_EVERY, int(total_steps) // WINDOWS))
        self.monitor = watch(
            model,
            optimizer,
            log_dir=self.dir,
            steps_per_epoch=steps_per_epoch,
            start_step=start_step,
            **options,
        )
        return self.monitor

    def add_loss(self, loss: Tensor | float) -> None:
        """One micro-batch's loss (kept on the device until the monitor syncs)."""
        if self.monitor is not None and not self.finished:
            self._losses.append(loss.detach() if isinstance(loss, Tensor) else float(loss))

    def step(self, **extra: Any) -> None:
        """Record one optimizer step with the mean loss of its micro-batches (none: skipped)."""
        losses, self._losses = self._losses, []
        if self.monitor is None or self.finished or not losses:
            return
        if len(losses) == 1:
            loss = losses[0]
        elif all(isinstance(v, Tensor) for v in losses):
            loss = torch.stack([torch.as_tensor(v).float().reshape(()) for v in losses]).mean()
        else:
            loss = math.fsum(float(v) for v in losses) / len(losses)
        self.monitor.step(loss, **extra)

    def epoch(self, metrics: Mapping[str, Any]) -> None:
        """``log_epoch`` with the framework's metrics renamed (see :func:`epoch_metrics`)."""
        if self.monitor is not None and not self.finished:
            self.monitor.log_epoch(**epoch_metrics(metrics))

    def precheck(
        self, model: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor], x: Tensor, y: Tensor
    ) -> str | None:
        """Run the asked-for checks on ``(x, y)``; write sanity.json / gradcheck.json; return
        the failure (one paragraph: which check, the report's table), or None when all pass.

        ``model(x)`` must give class scores for ``y`` (the adapters' views of the framework's
        model, see :mod:`babysit.integrations._views`). A check that cannot run on this input
        (a :class:`~babysit.errors.BabysitError`) is a failure too: it was asked for.
        """
        self.checked = True
        failures: list[str] = []
        cuda = [x.device] if x.device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=cuda):  # the fit's random numbers stay as they were
                self._run_checks(model, loss_fn, x, y, failures)
        except BabysitError as exc:
            failures.append(f"the pre-training checks could not run: {exc}")
        return "\n".join(failures) or None

    def _run_checks(
        self,
        model: nn.Module,
        loss_fn: Callable[[Tensor, Tensor], Tensor],
        x: Tensor,
        y: Tensor,
        failures: list[str],
    ) -> None:
        from babysit.checks.gradcheck import gradcheck
        from babysit.checks.sanity import sanity_check
        from babysit.training.evaluate import class_dim

        if self.sanity:
            with torch.no_grad():
                out = model(x[:2])
            dim = class_dim(out, y[:2]) if isinstance(out, Tensor) else None
            if dim is None:
                raise ConfigError(
                    f"{self.where}(sanity=True): the model's output on the first batch is "
                    "not class scores (N, C) for its targets; the sanity checks need them"
                )
            report = sanity_check(model, loss_fn, (x, y), num_classes=int(out.shape[dim]))
            self._write("sanity.json", report.to_dict())
            if not report.passed:
                failures.append(f"sanity checks failed:\n{report}")
        if self.gradcheck:
            grads = gradcheck(model, loss_fn, x, y)
            self._write("gradcheck.json", grads.to_dict())
            if not grads.passed:
                failures.append(f"gradient check failed:\n{grads}")

    def _write(self, name: str, data: Any) -> None:
        if self.dir is not None and logging_rank():
            write_json_atomic(self.dir / name, data)

    def finish(self, *, report: bool = True) -> list[Finding]:
        """Close the monitor (findings.json), write report.html; idempotent. Returns the
        findings (empty on ranks that do not log)."""
        if self.monitor is None or self.finished:
            return self.findings
        self._losses = []  # micro-batches after the last optimizer step: no step to record
        active = logging_rank()
        self.finished = True
        if active:
            self.findings = self.monitor.findings()
        self.monitor.close()
        if active and report and self.dir is not None:
            from babysit.report.html import write_report

            start = time.process_time()
            self.report = write_report(self.dir)
            self.report_seconds = time.process_time() - start
        return self.findings

    def summary(self) -> list[str]:
        """Lines for the framework's log: where the report is, then each finding."""
        if self.report is None:
            return []
        head = f"babysit: {len(self.findings)} finding(s); report: {self.report}"
        return [head, *(f"babysit: {f}" for f in self.findings)]


class SessionOwner:
    """What both callbacks show of their :class:`Session`: its run dir and findings."""

    session: Session

    @property
    def log_dir(self) -> Path | None:
        """The run dir once training began (metrics.jsonl, findings.json, report.html)."""
        return self.session.dir

    @property
    def findings(self) -> list[Any]:
        """The findings written at the end (empty before, and off process zero)."""
        return self.session.findings
