"""Planted-pathology benchmark: does babysit.watch() name the root cause first, and only that?

Plain user loops (as the README's: a DataLoader, ``torch.optim``, ``babysit.watch(model,
optimizer, log_dir=..., steps_per_epoch=len(loader))``, ``mon.step(loss)``,
``mon.log_epoch(...)``; no chance loss given) train the setups of
``benchmarks/diagnosis_cases.py``: 12 planted pathologies and 27 healthy setups with ordinary
good settings, 3 seeds each, on 13 data sets (scikit-learn's digits, breast cancer, wine and
iris; make_classification, make_moons, make_circles, make_blobs, make_gaussian_quantiles; a
spiral; digit images and synthetic bar images through a convnet).

The setups are split in two halves: thresholds may be tuned on ``tune`` (each pathology on
two or three setups); ``held_out`` (one more setup per pathology and 9 healthy setups, on
other data, models and optimizers) is only measured. Per pathology and half it prints

- recall: share of runs whose warnings / errors include a code naming the pathology;
- first: share of runs whose first finding (the one to act on) names it;
- other: share of runs with a warning / error that names something else as well;
- and, over the healthy runs, false alarms: share with any warning or error (info is fine).

    .venv/bin/python benchmarks/diagnosis.py                 # both halves, 3 seeds (~8 min)
    .venv/bin/python benchmarks/diagnosis.py --quick         # held-out half, 1 seed (~40 s)
    .venv/bin/python benchmarks/diagnosis.py --half tune -v  # every run's findings
    .venv/bin/python benchmarks/diagnosis.py --keep runs/bench ; ... --rediagnose runs/bench

Exits 1 when the held-out half misses a goal: recall >= 95 %, first >= 85 %, alarms <= 5 %.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))  # diagnosis_cases, run as a script

import babysit
from babysit.monitor.diagnose import Finding, diagnose
from babysit.monitor.log import read_metrics
from diagnosis_cases import HEALTHY, PATHOLOGIES, Setup
from diagnosis_kit import load

GOALS = {"recall": 0.95, "first": 0.85, "alarms": 0.05}
ALARM = ("warning", "error")  # the severities that count (recall, first, false alarms)


def train_run(setup: Setup, seed: int, out: Path) -> list[Finding]:
    """Train ``setup`` with a plain loop under ``babysit.watch()``; the monitor's findings."""
    x, y, xv, yv, classes = load(setup.data, seed, setup.train_size)
    torch.manual_seed(seed)
    if setup.shuffle_labels:
        y = y[torch.randperm(len(y))]
    model = setup.model(tuple(x.shape[1:]), classes)
    params = list(model.parameters())
    if setup.freeze_first:
        first = next(m for m in model.modules() if isinstance(m, torch.nn.Linear))
        first.requires_grad_(False)
    optimizer = setup.optimizer(params)
    loader = DataLoader(TensorDataset(x, y), batch_size=setup.batch_size, shuffle=True)
    weights = [p for p in params if p.ndim >= 2]
    with babysit.watch(model, optimizer, log_dir=out, steps_per_epoch=len(loader)) as mon:
        for _ in range(setup.epochs):
            model.train()
            total, correct = 0.0, 0
            for xb, yb in loader:
                scores = model(xb)
                loss = F.cross_entropy(scores, yb)
                total += loss.item() * len(yb)
                correct += int((scores.argmax(1) == yb).sum())
                if setup.l2:
                    loss = loss + setup.l2 * sum((w**2).sum() for w in weights)
                if setup.zero_grad:
                    optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                mon.step(loss)
            model.eval()
            with torch.no_grad():
                val_scores = model(xv)
            scores_ = {
                "train_loss": total / len(y),
                "train_acc": correct / len(y),
                "val_loss": F.cross_entropy(val_scores, yv).item(),
                "val_acc": (val_scores.argmax(1) == yv).float().mean().item(),
            }
            keep = {"val_acc": ["val_acc"], "val": ["val_loss", "val_acc"]}.get(setup.log)
            mon.log_epoch(**{k: v for k, v in scores_.items() if keep is None or k in keep})
    return mon.findings()


@dataclass
class Result:
    setup: Setup
    seed: int
    findings: list[Finding]
    seconds: float = 0.0

    @property
    def alarms(self) -> list[Finding]:
        return [f for f in self.findings if f.severity in ALARM]

    @property
    def named(self) -> bool:
        return any(f.code in self.setup.codes for f in self.alarms)

    @property
    def first(self) -> bool:
        return bool(self.alarms) and self.alarms[0].code in self.setup.codes


def run_dir(out: Path, setup: Setup, seed: int) -> Path:
    slug = "".join(c if c.isalnum() else "_" for c in setup.name)
    return out / f"{slug}-s{seed}"


def run_suite(
    setups: Iterable[Setup], seeds: Iterable[int], out: Path, *, rediagnose: bool = False
) -> list[Result]:
    """Train (or, with ``rediagnose``, re-read the metrics.jsonl of) every setup x seed."""
    results = []
    for setup in setups:
        for seed in seeds:
            path, start = run_dir(out, setup, seed), time.perf_counter()
            if rediagnose:
                if not (path / "metrics.jsonl").is_file():
                    continue  # not (yet) trained there
                findings = diagnose(read_metrics(path / "metrics.jsonl"))
            else:
                shutil.rmtree(path, ignore_errors=True)  # metrics.jsonl is appended to
                findings = train_run(setup, seed, path)
            results.append(Result(setup, seed, findings, time.perf_counter() - start))
    return results


def table(results: list[Result]) -> tuple[str, dict[str, float]]:
    """Per pathology: recall, first, and "other" (runs with a warning / error naming something
    else as well); then the healthy runs' false alarms (any warning or error)."""
    head = f"{'pathology (codes that name it)':76s} {'runs':>4s} {'recall':>7s} {'first':>7s}"
    lines = [f"{head} {'other':>7s}"]
    sick = [r for r in results if r.setup.codes]
    groups: dict[str, list[Result]] = {}
    for r in sick:
        groups.setdefault(r.setup.name.split(" / ")[0], []).append(r)

    def row(name: str, runs: list[Result]) -> tuple[str, float, float]:
        recall = sum(r.named for r in runs) / len(runs)
        first = sum(r.first for r in runs) / len(runs)
        other = sum(any(f.code not in r.setup.codes for f in r.alarms) for r in runs) / len(runs)
        text = f"{name:76s} {len(runs):4d} {recall:7.0%} {first:7.0%} {other:7.0%}"
        return text, recall, first

    for name, runs in groups.items():
        codes = ", ".join(sorted(runs[0].setup.codes))
        lines.append(row(f"{name} ({codes})", runs)[0])
    healthy = [r for r in results if not r.setup.codes]
    text, recall, first = row("all pathologies", sick) if sick else ("", 0.0, 0.0)
    totals = {
        "recall": recall,
        "first": first,
        "alarms": sum(bool(r.alarms) for r in healthy) / max(len(healthy), 1),
    }
    lines.append(text)
    alarmed = [
        f"{r.setup.name} s{r.seed}: {[f.code for f in r.alarms]}" for r in healthy if r.alarms
    ]
    data = len({r.setup.data for r in healthy})
    lines.append(
        f"false alarms: {totals['alarms']:.1%} of {len(healthy)} healthy runs"
        f" ({len({r.setup.name for r in healthy})} setups on {data} data sets)"
    )
    lines += [f"  {a}" for a in alarmed]
    return "\n".join(lines), totals


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="held-out half, 1 seed")
    parser.add_argument("--half", choices=["tune", "held_out", "both"], default=None)
    parser.add_argument("--seeds", type=int, default=3, help="seeds per setup")
    parser.add_argument("--only", default="", help="only setups whose name contains this")
    parser.add_argument("--keep", type=Path, default=None, help="keep the run dirs here")
    parser.add_argument("--rediagnose", type=Path, default=None, help="re-read kept run dirs")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every run's findings")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    half = args.half or ("held_out" if args.quick else "both")
    seeds = range(1 if args.quick else args.seeds)
    setups = [
        s
        for s in PATHOLOGIES + HEALTHY
        if (half == "both" or s.half == half) and args.only in s.name
    ]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        out = args.rediagnose or args.keep or Path(tmp)
        results = run_suite(setups, seeds, out, rediagnose=args.rediagnose is not None)
    for r in results if args.verbose else []:
        mark = "ok " if (r.first if r.setup.codes else not r.alarms) else "BAD"
        print(f"{mark} {r.setup.name} s{r.seed} ({r.seconds:.1f} s)")
        for f in r.findings:
            print(f"      {f}")
    held: dict[str, float] = {}
    for name in ("tune", "held_out"):
        part = [r for r in results if r.setup.half == name]
        if part:
            text, totals = table(part)
            print(f"\n=== {name} half ===\n{text}")
            held = totals if name == "held_out" else held
    print(f"\n{time.perf_counter() - start:.0f} s; goals on the held-out half: {GOALS}")
    missed = [
        k
        for k, goal in GOALS.items()
        if k in held and (held[k] > goal if k == "alarms" else held[k] < goal)
    ]
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
