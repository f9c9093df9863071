"""Study dirs for the study page's tests: a hand-written one, and one from a real small search.

The hand-written study has every trial state (complete, pruned, diverged, failed, lost), two
coarse -> fine stages over a log, a linear and a choice range, a border warning on the
high side of the lr range, and a run dir with metrics.jsonl for each scored trial, in the
formats summary.json and metrics.jsonl are written in (DESIGN.md).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import babysit

PARAMS = ("optim.lr", "model.dropout", "optim.mu")
STAGE_RANGES = [
    {
        "optim.lr": "loguniform(1e-06, 10.0)",
        "model.dropout": "uniform(0.0, 1.0)",
        "optim.mu": "choice(0.5, 0.9, 0.99)",
    },
    {
        "optim.lr": "loguniform(0.00158, 31.6)",
        "model.dropout": "uniform(0.1, 0.6)",
        "optim.mu": "choice(0.9, 0.99)",
    },
]
# number: (stage, state, optim.lr, model.dropout, optim.mu, value)
TRIALS: dict[int, tuple[int, str, float, float, float, float | None]] = {
    0: (0, "complete", 3e-3, 0.2, 0.9, 0.71),
    1: (0, "complete", 5.0, 0.4, 0.9, 0.83),
    2: (0, "diverged", 9.0, 0.5, 0.99, math.nan),
    3: (0, "pruned", 1e-5, 0.7, 0.5, 0.12),
    4: (0, "failed", 1e-4, 0.9, 0.5, None),
    5: (0, "complete", 8.0, 0.3, 0.99, 0.86),
    6: (0, "complete", 2e-2, 0.6, 0.5, 0.55),
    7: (0, "pruned", 3e-6, 0.1, 0.9, 0.20),
    8: (1, "complete", 12.0, 0.3, 0.9, 0.91),
    9: (1, "complete", 20.0, 0.25, 0.99, 0.93),
    10: (1, "diverged", 28.0, 0.4, 0.9, math.nan),
    11: (1, "complete", 2.0, 0.5, 0.99, 0.88),
    12: (0, "lost", 2e-4, 0.2, 0.5, None),  # its worker died; summary.json says "lost"
}
BEST = 9
WARNING = {"param": "optim.lr", "side": "high", "value": 8.0, "low": 1e-6, "high": 10.0}


def _metrics(path: Path, *, lr: float, value: float, epochs: int) -> None:
    """A short run: loss falling as lr allows, one epoch record per epoch."""
    path.mkdir(parents=True, exist_ok=True)
    steps = 20
    rate = min(1.0, math.log10(lr * 1e6 + 1) / 7)
    lines = []
    for step in range(1, steps * epochs + 1):
        loss = 2.3 * math.exp(-3 * rate * step / steps) + 0.05 * (step % 3)
        record = {"kind": "batch", "step": step, "epoch": step / steps, "loss": loss + 1e-3}
        lines.append(record | {"data_loss": loss, "reg_loss": 1e-3, "lr": lr})
        if step % steps == 0:
            e = step // steps
            val = {"val_loss": loss * 1.1, "val_acc": value * e / epochs}
            lines.append({"kind": "epoch", "epoch": e, "step": step, "train_loss": loss} | val)
    text = "".join(json.dumps(r) + "\n" for r in lines)
    (path / "metrics.jsonl").write_text(text, encoding="utf-8")


def make_study_dir(
    root: Path, *, direction: str = "max", extra: int = 0, report_for: int | None = BEST
) -> Path:
    """Write the hand-written study into ``root``; ``extra``: more complete stage-1 trials."""
    trials = dict(TRIALS)
    for i in range(extra):
        trials[len(TRIALS) + i] = (1, "complete", 1.0 + i, 0.3, 0.9, 0.60 + i / 1000)
    records: list[dict[str, Any]] = []
    for number, (stage, state, lr, dropout, mu, value) in trials.items():
        epochs = (1, 3)[stage]
        rel = f"trials/s{stage}-{number}"
        record: dict[str, Any] = {
            "number": number,
            "stage": stage,
            "state": state,
            "params": dict(zip(PARAMS, (lr, dropout, mu), strict=True)),
            "value": "nan" if value is not None and math.isnan(value) else value,
            "epochs": float(epochs),
            "dir": rel,
        }
        if state == "failed":
            record["error"] = f"trial {number}: the sanity check failed"
        if value is not None and math.isfinite(value):
            _metrics(root / rel, lr=lr, value=value, epochs=epochs)
        records.append(record)
    if report_for is not None:
        (root / f"trials/s1-{report_for}/report.html").write_text("<p>run</p>", encoding="utf-8")
    stages = []
    for s, ranges in enumerate(STAGE_RANGES):
        states = [t[1] for t in trials.values() if t[0] == s]
        counts = {state: states.count(state) for state in sorted(set(states))}
        n = len(states)
        stages.append({"epochs": float(s * 2 + 1), "trials": n, "ranges": ranges, "counts": counts})
    best = trials[BEST]
    summary = {
        "best": {"params": dict(zip(PARAMS, best[2:5], strict=True)), "value": best[5], "trial": 9},
        "stages": stages,
        "border_warnings": [WARNING | {"stage": 0}],
        "trials": records,
        "study": {
            "name": "synthetic",
            "storage": f"journal://{root / 'journal.log'}",
            "metric": "acc",
            "direction": direction,
        },
    }
    (root / "summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    return root


SEARCH_CONFIG = {
    "task": {"name": "digits-mlp"},
    "model": {"hidden": [16]},
    "train": {"batch_size": 64},
    "search": {
        "space": {"optim.lr": "loguniform(1e-5, 1e0)", "train.reg": "loguniform(1e-6, 1e-1)"},
        "stage": [{"epochs": 1, "trials": 8}, {"epochs": 2, "trials": 3}],
    },
}


def make_searched_study(root: Path) -> Path:
    """A real two-stage random search on digits (11 short trials, ~10 s on one core)."""
    return babysit.search(SEARCH_CONFIG, out=root).dir
