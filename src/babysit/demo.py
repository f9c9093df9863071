"""``babysit demo``: the recipe on the digits MLP, end to end, with the numbers it reached."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from babysit._io import write_json_atomic

__all__ = ["DEMO_CONFIG", "DemoResult", "run_demo"]

# He-initialised ReLU MLP with Adam (the notes' default rule) and a mild L2 penalty.
DEMO_CONFIG: dict[str, Any] = {
    "task": {"name": "digits-mlp"},
    "model": {"hidden": [100], "activation": "relu", "init": "he"},
    "optim": {"rule": "adam", "lr": 1e-3},
    "schedule": {"kind": "step", "every": 10, "factor": 0.5},
    "train": {"epochs": 20, "batch_size": 32, "reg": 1e-4, "seed": 0, "keep_best": 2},
}


@dataclass
class DemoResult:
    dir: Path
    seconds: float
    val_acc: float
    test_acc: float
    report: Path | None

    def summary(self) -> str:
        lines = [
            f"demo: digits-mlp reached val_acc {self.val_acc:.4f}, test_acc {self.test_acc:.4f}"
            f" in {self.seconds:.1f} s",
            f"run dir: {self.dir}",
        ]
        if self.report is not None:
            lines.append(f"report: {self.report}")
        return "\n".join(lines)


def run_demo(
    *, out: str | os.PathLike[str] | None = None, fast: bool = False, quiet: bool = False
) -> DemoResult:
    """Train digits-mlp, evaluate its best weights once on the test split, write demo.json."""
    from babysit.config import load_config
    from babysit.splits import Batches
    from babysit.tasks import task_for
    from babysit.training.checkpoint import list_checkpoints, load_checkpoint
    from babysit.training.evaluate import evaluate
    from babysit.training.run import train

    overrides = ["train.epochs=5"] if fast else []
    cfg = load_config(DEMO_CONFIG, overrides)
    out_dir = (
        Path(out) if out is not None else Path("runs") / f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    task = task_for(cfg)
    start = time.perf_counter()
    run = train(cfg, task=task, out=out_dir, quiet=quiet)
    seconds = time.perf_counter() - start
    # the test split is used once, at the end, on the weights chosen by validation
    best = max(list_checkpoints(run.dir / "checkpoints"), key=lambda c: c.value)
    model = task.model_factory(cfg.model_table())
    model.load_state_dict(load_checkpoint(best.path)["model"])
    _, test_acc = evaluate(model, Batches(task.test, 1024, shuffle=False), task.loss_fn)
    report = run.dir / "report.html"
    result = DemoResult(
        dir=run.dir,
        seconds=seconds,
        val_acc=float(best.value),
        test_acc=test_acc,
        report=report if report.exists() else None,
    )
    write_json_atomic(
        run.dir / "demo.json",
        {
            "seconds": seconds,
            "single": {"val_acc": result.val_acc, "test_acc": test_acc},
            "report": str(report) if result.report else None,
        },
    )
    return result
