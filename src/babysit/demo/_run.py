"""``run_demo``: the steps in order, timed, then ``demo.json`` and the demo's report page.

``demo.json`` (DESIGN.md) gives ``{seconds, single: {test_acc}, ema: {test_acc},
ensemble: {test_acc}, report}``, plus each step's time and line, the test split's size
and, per model, its validation score and checkpoint. The accuracies are read back from
the ensemble's ``ensemble.json`` (the final run's best and EMA checkpoints are members of
the ensemble), never recomputed; the test split is used there once, at the end.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from babysit._io import json_restore, write_json_atomic
from babysit.errors import ConfigError, ReportError

__all__ = ["DEMO_FILE", "DemoResult", "run_demo"]

DEMO_FILE = "demo.json"


@dataclass
class DemoResult:
    dir: Path
    seconds: float
    summary: dict[str, Any]  # demo.json's content
    report: Path | None

    def text(self) -> str:
        """The closing summary: each step's time and line, the three test accuracies."""
        s = self.summary
        lines = [f"{r['title']:<24}{r['seconds']:6.1f} s  {r['line']}" for r in s["steps"]]
        size = s["test_size"]
        for key, label in (("single", "best single model"), ("ema", "its EMA weights"),
                           ("ensemble", "ensemble")):  # fmt: skip
            lines.append(f"test accuracy, {label + ':':<20}{s[key]['test_acc']:.4f}")
        lines.append(f"(test split: {size} images, used once, at the end)")
        lines.append(f"total {self.seconds:.1f} s; demo dir {self.dir}")
        if self.report is not None:
            lines.append(f"report: {self.report}")
        return "\n".join(lines)


def _demo_dir(out: str | os.PathLike[str] | None) -> Path:
    if out is None:
        return Path("runs") / f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    path = Path(out)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise ConfigError(f"--out {path}: exists and is not an empty directory; give a new one")
    return path


def _member(members: list[dict[str, Any]], path: Path) -> dict[str, Any]:
    """The ensemble.json record of checkpoint ``path``."""
    for m in members:
        if Path(m["path"]).resolve() == path.resolve():
            return {k: m[k] for k in ("path", "val_acc", "test_acc") if k in m}
    raise ReportError(f"ensemble.json has no member {path}")


def _summary(state: Any, steps: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    from babysit.demo._steps import ENSEMBLE

    path = state.dir / ENSEMBLE / "ensemble.json"
    ens = json_restore(json.loads(path.read_text(encoding="utf-8")))
    single, ema = (_member(ens["members"], p) for p in state.final_members)
    return {
        "seconds": seconds,
        "single": single,
        "ema": ema,
        "ensemble": dict(ens["ensemble"]),
        "report": str(state.dir / "report.html"),
        "steps": steps,
        "test_size": len(state.task.test[1]) if isinstance(state.task.test, tuple) else None,
        "task": state.config.task.name,
    }


def run_demo(
    *,
    out: str | os.PathLike[str] | None = None,
    fast: bool = False,
    quiet: bool = False,
    data: str | None = None,
) -> DemoResult:
    """Run the recipe (demo/_steps.py) on ``data`` into ``out``; write demo.json and the page.

    Bad input (``data``, ``out``) raises ConfigError / TaskError / DataError before the
    demo dir is made; a failed check raises :class:`~babysit.demo._steps.CheckFailed`.
    """
    from rich.console import Console

    from babysit.demo._recipe import recipe_config
    from babysit.demo._steps import DemoState
    from babysit.tasks import task_for

    start = time.perf_counter()
    config = recipe_config(data=data, fast=fast)
    out_dir = _demo_dir(out)
    task = task_for(config)
    console = None if quiet else Console()
    out_dir.mkdir(parents=True, exist_ok=True)
    state = DemoState(dir=out_dir, config=config, task=task, console=console)
    import torch  # loaded by the task already; bad input above is answered before it

    threads = torch.get_num_threads()
    if not torch.cuda.is_available():
        # the digits models are tiny: a step is a few small kernels, and a second intra-op
        # thread costs more in synchronisation than it saves (on a busy 2-core machine, 10x)
        torch.set_num_threads(1)
    try:
        return _run_steps(state, start)
    finally:
        torch.set_num_threads(threads)


def _run_steps(state: Any, start: float) -> DemoResult:
    """Each step with its header and time, then demo.json and the page (run_demo's body)."""
    from babysit.demo._progress import header
    from babysit.demo._steps import STEPS

    console, out_dir = state.console, state.dir
    steps: list[dict[str, Any]] = []
    count = len(STEPS) + 1
    for i, step in enumerate(STEPS.values(), 1):
        if console is not None:
            header(console, i, count, step.title)
        began = time.perf_counter()
        line = step.run(state)
        steps.append(
            {
                "name": step.name,
                "title": step.title,
                "seconds": time.perf_counter() - began,
                "line": line,
            }
        )
        if console is not None:
            console.print(f"{step.title}: {line}", markup=False, highlight=False)
    # demo.json first (the page reads it), then the page, then demo.json with its time
    if console is not None:
        header(console, count, count, "Report")
    began = time.perf_counter()
    summary = _summary(state, steps, time.perf_counter() - start)
    write_json_atomic(out_dir / DEMO_FILE, summary)
    from babysit.report.html import write_report

    report = write_report(out_dir)
    steps.append(
        {
            "name": "report",
            "title": "Report",
            "seconds": time.perf_counter() - began,
            "line": str(report),
        }
    )
    seconds = time.perf_counter() - start
    summary.update(seconds=seconds, steps=steps)
    write_json_atomic(out_dir / DEMO_FILE, summary)
    return DemoResult(dir=out_dir, seconds=seconds, summary=summary, report=report)
