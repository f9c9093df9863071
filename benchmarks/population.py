"""Trials per second: a population trained at once versus the same trials one by one.

The trials are digits-MLP configs (the default hidden=[100]) with the search's default
distributions for lr, reg and momentum (optim/hparams.py: lr and reg log-uniform as the
notes say, mu one of the notes' values), rule "momentum", 5 epochs of batch 64. Both
sides train every trial from the same initial weights and data order (train.seed) and
validate after every epoch; the sequential side is the trainer's core loop with
torch.optim (a trial whose loss turns NaN/inf stops there, as the trainer's does), the
population side ``train_population`` with no run dirs. Each size runs ``--repeats``
times, the two sides alternating, and the medians are compared (the machine is shared:
absolute times are noisy, the side-by-side ratio is what counts). Both sides use
``--threads`` torch threads, 1 by default: on a busy 2-core machine a second thread
waits for a core at every operation.

    .venv/bin/python benchmarks/population.py                  # CPU: P = 64, 256
    .venv/bin/python benchmarks/population.py --quick          # a smoke run
    .venv/bin/python benchmarks/population.py --device cuda    # P = 64, 1024, 4096

Prints one line per size and, last, the largest size's ratio as ``NNx``. On a GPU the
sequential side runs at most ``--seq-trials`` trials (its trials/s does not depend on P).
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from typing import Any

import numpy as np
import torch

from babysit.optim.build import create_optimizer
from babysit.optim.hparams import HPARAMS
from babysit.splits import Batches
from babysit.tasks import Task, get_task
from babysit.training.evaluate import evaluate
from babysit.training.population import train_population
from babysit.tuning.dimensions import parse_dimension

SEARCHED = ("optim.lr", "train.reg", "optim.mu")


def trials(count: int, seed: int = 0) -> list[dict[str, Any]]:
    """``count`` configs drawn from the search's default distributions of SEARCHED."""
    rng = np.random.default_rng(seed)
    dims = {key: parse_dimension(HPARAMS[key].search_default) for key in SEARCHED}
    return [{key: dim.sample(rng) for key, dim in dims.items()} for _ in range(count)]


def base_config(epochs: int) -> dict[str, Any]:
    return {
        "task": {"name": "digits-mlp"},
        "optim": {"rule": "momentum"},
        "train": {"epochs": epochs, "batch_size": 64, "seed": 0, "report": False},
    }


def sequential(task: Task, params: list[dict[str, Any]], epochs: int, device: str) -> list[float]:
    """The trainer's core loop per trial with torch.optim; each trial's last val score."""
    dev = torch.device(device)
    val = Batches(task.val, 1024, shuffle=False, device=dev, name="val")
    scores = []
    for p in params:
        torch.manual_seed(0)
        model = task.model_factory({}).to(dev)
        opt = create_optimizer(
            model.parameters(), "momentum", {"lr": p["optim.lr"], "mu": p["optim.mu"]}
        )
        reg = p["train.reg"]
        batches = Batches(
            task.train, 64, shuffle=True, generator=torch.Generator().manual_seed(0), device=dev
        )
        score = math.nan
        for _ in range(epochs):
            model.train()
            diverged = False
            for x, y in batches:
                loss = task.loss_fn(model(x), y) + task.reg_fn(model, reg)
                if not math.isfinite(loss.item()):
                    diverged = True
                    break
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            if diverged:
                score = math.nan
                break
            score = evaluate(model, val, task.loss_fn, task.metric)[1]
        scores.append(score)
    return scores


def population(task: Task, params: list[dict[str, Any]], epochs: int, device: str) -> list[float]:
    result = train_population(base_config(epochs), params, task=task, device=device)
    return [
        m.epochs[-1]["val_acc"] if len(m.epochs) == epochs else math.nan for m in result.members
    ]


def _timed(fn: Any, *args: Any, device: str) -> tuple[float, Any]:
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn(*args, device)
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, out


def compare(
    task: Task, size: int, *, epochs: int, repeats: int, seq_trials: int, device: str
) -> float:
    """Median trials/s of both sides at population size ``size``; prints a line; the ratio."""
    params = trials(size)
    seq_params = params[: min(size, seq_trials)]
    pop_times, seq_times = [], []
    for _ in range(repeats):  # alternate, so both see the same load
        t, pop_scores = _timed(population, task, params, epochs, device=device)
        pop_times.append(t)
        t, seq_scores = _timed(sequential, task, seq_params, epochs, device=device)
        seq_times.append(t)
    pop_rate = size / statistics.median(pop_times)
    seq_rate = len(seq_params) / statistics.median(seq_times)
    # the notes' momentum and torch's agree at a constant lr up to rounding, which a chaotic
    # trial (lr near divergence) amplifies: count the trials whose last val_acc agrees
    pairs = list(zip(pop_scores, seq_scores, strict=False))
    agree = sum(abs(a - b) <= 0.01 or (math.isnan(a) and math.isnan(b)) for a, b in pairs)
    diverged = sum(not math.isfinite(s) for s in pop_scores)
    print(
        f"P={size}: population {pop_rate:.1f} trials/s, sequential {seq_rate:.2f} trials/s "
        f"({len(seq_params)} trials), ratio {pop_rate / seq_rate:.1f}x; {diverged} diverged; "
        f"last val_acc within 0.01 of torch.optim's for {agree}/{len(pairs)}",
        flush=True,
    )
    return pop_rate / seq_rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--sizes", type=int, nargs="*", default=None)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seq-trials", type=int, default=None)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: the CPU is shared, see above)"
    )
    parser.add_argument("--quick", action="store_true", help="P = 8, 32; 1 epoch; 1 repeat")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = args.sizes or ([64, 1024, 4096] if args.device == "cuda" else [64, 256])
    epochs, repeats = args.epochs, args.repeats
    if args.quick:
        sizes, epochs, repeats = [8, 32], 1, 1
    seq_trials = args.seq_trials or (64 if args.device == "cuda" else max(sizes))
    task = get_task("digits-mlp")
    print(
        f"digits-mlp, rule momentum, {epochs} epochs, device {args.device}"
        + (f" ({torch.cuda.get_device_name()})" if args.device == "cuda" else "")
        + f", {torch.get_num_threads()} threads, median of {repeats}",
        flush=True,
    )
    population(task, trials(4), 1, args.device)  # warm-up: imports, allocator, kernels
    sequential(task, trials(4), 1, args.device)
    ratios = [
        compare(task, s, epochs=epochs, repeats=repeats, seq_trials=seq_trials, device=args.device)
        for s in sizes
    ]
    print(f"{ratios[-1]:.1f}x")


if __name__ == "__main__":
    main()
