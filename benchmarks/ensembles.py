"""The notes' "Model Ensembles", measured on digits: which ensemble buys how much.

    .venv/bin/python benchmarks/ensembles.py            # ~1.5 min on a 2-core CPU
    .venv/bin/python benchmarks/ensembles.py --quick    # a smoke run (tiny models, 5 epochs)

Every model is the digits MLP of ``base_config`` (100 hidden ReLU units, Adam, 20 epochs
of batch 32, L2 1e-4), trained by babysit; every number is ``babysit.ensemble``'s, on the
test split (read only to report; members are ranked and chosen on validation):

    mean single model        the mean of the 10 seeds' test scores, each model alone
    ensemble of 5 seeds      seeds 0-4 (the notes: "same model, different initializations")
    top-5 of a search        a random search of lr and L2 (one stage, population executor),
                             its 5 best trials by validation (different hyperparameters)
    5 checkpoints of a run   seed 0's last 5 epochs (the notes: cheap, little variety)
    EMA vs raw               seed 0 trained with train.ema = 0.999: its best raw and best EMA
                             checkpoints, each alone
    distilled student        a 32-unit MLP on the 5-seed ensemble's soft targets (T = 4,
                             alpha = 0.9) and, beside it, the same student on labels only

then accuracy against the ensemble size K = 1..10 over the 10 seeds, members added
best-first by validation accuracy (the notes: better with diminishing returns). The test
split has 359 examples: one example is 0.28 points of accuracy.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import babysit
from babysit.ensembles import Ensemble

Row = tuple[str, int, float | None, float | None, float | None]  # name, members, accs, loss


def base_config(epochs: int, hidden: int, **train: Any) -> dict[str, Any]:
    return {
        "task": {"name": "digits-mlp"},
        "model": {"hidden": [hidden]},
        "optim": {"rule": "adam", "lr": 1e-3},
        "train": {"epochs": epochs, "batch_size": 32, "reg": 1e-4, "seed": 0,
                  "keep_last": 5, "report": False, **train},
    }  # fmt: skip


def student_config(epochs: int, hidden: int) -> dict[str, Any]:
    config = base_config(epochs, hidden, keep_last=1)
    config["optim"]["lr"] = 3e-3
    config["distill"] = {"temperature": 4.0, "alpha": 0.9}
    return config


def search_config(epochs: int, hidden: int, trials: int) -> dict[str, Any]:
    config = base_config(epochs, hidden, keep_last=1)
    config["search"] = {
        "seed": 0,
        "space": {"optim.lr": "loguniform(1e-4, 1e-2)", "train.reg": "loguniform(1e-6, 1e-2)"},
        "stage": [{"epochs": epochs, "trials": trials, "executor": "population"}],
    }
    return config


def row(name: str, e: Ensemble) -> Row:
    s = e.scores
    return name, len(e.members), s["val_acc"], s["test_acc"], s["test_loss"]


def ema_rows(out: Path, args: argparse.Namespace) -> list[Row]:
    """EMA vs raw weights: seed 0's config trained with ``train.ema = 0.999`` (the decay
    warmed up as min(0.999, (1+t)/(10+t))); its best raw checkpoint and its best EMA
    checkpoint (``checkpoints/ema/``), each scored as an ensemble of one."""
    from babysit.training.checkpoint import list_checkpoints

    config = base_config(args.epochs, args.hidden, ema=0.999)
    run = babysit.train(config, out=out / "ema-run", quiet=True)
    rows: list[Row] = []
    for name, sub in (("raw weights (EMA run)", ""), ("EMA weights (0.999)", "ema")):
        best = max(list_checkpoints(run.dir / "checkpoints" / sub), key=lambda c: c.value)
        one = babysit.ensemble([best.path], out=out / f"ema-{sub or 'raw'}", quiet=True,
                               report=False)  # fmt: skip
        rows.append(row(name, one))
    return rows


def measure(out: Path, args: argparse.Namespace) -> tuple[list[Row], Ensemble]:
    quiet = not args.verbose
    e, h = args.epochs, args.hidden
    seeds = babysit.ensemble(seeds=args.seeds, config=base_config(e, h), out=out / "seeds",
                             quiet=quiet, report=False)  # fmt: skip
    runs = [m.run_dir for m in seeds.members]
    five = babysit.ensemble(runs[:5], out=out / "five", quiet=quiet, report=False)
    study = babysit.search(search_config(e, h, args.trials), out=out / "search")
    top = babysit.ensemble(from_study=study.dir, top=5, out=out / "top", quiet=quiet,
                           report=False)  # fmt: skip
    ckpts = babysit.ensemble(from_run=runs[0], checkpoints=5, pick="last", out=out / "ckpt",
                             quiet=quiet, report=False)  # fmt: skip
    student = babysit.ensemble(runs[:5], out=out / "student", distill=student_config(e, 32),
                               quiet=quiet, report=False)  # fmt: skip
    mean = seeds.mean_member
    rows: list[Row] = [
        ("mean single model", 1, mean["val_acc"], mean["test_acc"], mean["test_loss"]),
        row("ensemble of 5 seeds", five),
        row("top-5 of a search", top),
        row("5 checkpoints of one run", ckpts),
        *ema_rows(out, args),
    ]
    assert student.distill is not None
    for key, name in (("distilled", "distilled student"), ("labels", "student on labels")):
        s = student.distill["students"][key]
        rows.append((f"{name} (32 units)", 1, s["val_acc"], s["test_acc"], s["test_loss"]))
    return rows, seeds


def _num(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10, help="seeds trained (K = 1..N)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--hidden", type=int, default=100, help="the members' hidden units")
    parser.add_argument("--trials", type=int, default=16, help="the search's trials")
    parser.add_argument("--out", type=Path, default=None, help="keep the dirs here")
    parser.add_argument("--quick", action="store_true", help="5 epochs, 8 units, 6 seeds")
    parser.add_argument("--verbose", action="store_true", help="babysit's progress lines")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.epochs, args.hidden, args.trials = 6, 5, 8, 6
    torch.set_num_threads(1)  # a shared 2-core machine: one thread is the steadier
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out if args.out is not None else Path(tmp)
        rows, seeds = measure(out, args)
    print(f"$ python benchmarks/ensembles.py {shlex.join(argv or sys.argv[1:])}".rstrip())
    print(f"{'':28} {'members':>7} {'val_acc':>8} {'test_acc':>8} {'test_loss':>9}")
    for name, k, val, acc, loss in rows:
        print(f"{name:28} {k:7d} {_num(val, '8.4f')} {_num(acc, '8.4f')} {_num(loss, '9.4f')}")
    print("\naccuracy against ensemble size (seeds added best-first by val_acc)")
    print(f"{'K':>3} {'val_acc':>8} {'test_acc':>8} {'test_loss':>9}")
    for r in seeds.by_size:
        print(f"{r['size']:3d} {r['val_acc']:8.4f} {r['test_acc']:8.4f} {r['test_loss']:9.4f}")
    print(f"\n{time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
