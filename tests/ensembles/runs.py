"""Real run dirs and study dirs to ensemble, made fast: trained as one population.

Population members are babysit run dirs (config.toml, metrics.jsonl, checkpoints/) with
the layout a single run leaves, so the ensemble code reads them as any other run.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from babysit.training.population import train_population


def run_config(**train: Any) -> dict[str, Any]:
    """digits-mlp with 8 hidden units: a few hundred steps of work per run."""
    return {
        "task": {"name": "digits-mlp"},
        "model": {"hidden": [8]},
        "optim": {"rule": "adam", "lr": 1e-2},
        "train": {"epochs": 2, "batch_size": 64, "seed": 0, "report": False, **train},
    }


def make_runs(root: Path, names: Sequence[str], **train: Any) -> list[Path]:
    """One run dir per name under ``root`` (seeds 0, 1, ...), trained at once."""
    train_population(
        run_config(**train),
        [{"train.seed": i} for i in range(len(names))],
        out=root,
        names=list(names),
    )
    return [root / name for name in names]


def trial(number: int, stage: int, state: str, value: float | None) -> dict[str, Any]:
    record: dict[str, Any] = {"number": number, "stage": stage, "state": state, "params": {}}
    record["value"] = value
    if state == "complete":
        record["dir"] = f"trials/s{stage}-{number}"
    return record


def make_study(root: Path, trials: Sequence[dict[str, Any]], direction: str = "max") -> Path:
    """A study dir: summary.json as babysit search writes it, a run dir per complete trial."""
    root.mkdir(parents=True, exist_ok=True)
    names = [Path(t["dir"]).name for t in trials if "dir" in t]
    if names:
        make_runs(root / "trials", names)
    summary = {
        "best": {"params": None, "value": None, "trial": None},
        "stages": [{"epochs": 1, "trials": len(trials), "ranges": {}}],
        "border_warnings": [],
        "trials": list(trials),
        "study": {"name": "s", "storage": "journal", "metric": "acc", "direction": direction},
    }
    (root / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    return root


def ema_checkpoint(run: Path, *, scale: float = 1.0) -> Path:
    """An averaged checkpoint in the EMA layout: ``<run>/checkpoints/ema/...``, ``{"model"}``
    only (the weights of the run's first checkpoint, scaled)."""
    source = sorted((run / "checkpoints").glob("*.pt"))[0]
    state = torch.load(source, weights_only=True)["model"]
    path = run / "checkpoints" / "ema" / "epoch=002-val_acc=0.5000.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": {k: v * scale for k, v in state.items()}}, path)
    return path
