"""Benchmark: babysit.gradcheck against torch.autograd.gradcheck(fast_mode=True).

MLP 784-1000-256-10 (ReLU, 1,040,138 parameters), batch 8, float64, cross-entropy. Both check
the same loss as a function of the parameters: babysit with its default options on all 8
samples (datapoints=8; its default of 4 is timed too), fast_mode on a function of the six
parameter tensors. Both are warmed up, then timed as the median of ``--repeat`` runs.
Goal: babysit <= 2x fast_mode, while giving per-tensor verdicts that fast_mode cannot.

    python benchmarks/gradcheck.py [--repeat 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

import babysit.checks.gradcheck.check as bg


def timed(fns: dict[str, Callable[[], object]], repeat: int) -> dict[str, float]:
    """Median CPU time (process_time: steadier than wall time on a shared machine) of each
    function over ``repeat`` rounds, after one warm-up round; rounds interleave the functions
    so that a change of machine load hits all of them alike."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for round_ in range(repeat + 1):
        for name, fn in fns.items():
            start = time.process_time()
            fn()
            if round_:
                times[name].append(time.process_time() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(784, 1000), nn.ReLU(), nn.Linear(1000, 256), nn.ReLU(), nn.Linear(256, 10)
    ).double()
    x, y = torch.randn(8, 784, dtype=torch.float64), torch.randint(0, 10, (8,))
    names = [n for n, _ in model.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_(True) for p in model.parameters())

    def loss(*ps: Tensor) -> Tensor:
        return F.cross_entropy(functional_call(model, dict(zip(names, ps, strict=True)), (x,)), y)

    t = timed(
        {
            "torch.autograd.gradcheck fast_mode": lambda: torch.autograd.gradcheck(
                loss, params, fast_mode=True
            ),
            "babysit.gradcheck (8 datapoints)": lambda: bg.gradcheck(
                model, F.cross_entropy, x, y, datapoints=8
            ),
            "babysit.gradcheck (default: 4)": lambda: bg.gradcheck(model, F.cross_entropy, x, y),
            "babysit.gradcheck (8, plain loop)": lambda: bg.gradcheck(
                model, F.cross_entropy, x, y, datapoints=8, batched=False
            ),
        },
        args.repeat,
    )
    print(bg.gradcheck(model, F.cross_entropy, x, y, datapoints=8))
    print(f"parameters: {sum(p.numel() for p in params):,}  threads: {torch.get_num_threads()}")
    for name, seconds in t.items():
        print(f"{name:36s} {seconds * 1e3:8.1f} ms")
    ratio = t["babysit.gradcheck (8 datapoints)"] / t["torch.autograd.gradcheck fast_mode"]
    print(f"ratio babysit / fast_mode: {ratio:.2f} (goal <= 2)")


if __name__ == "__main__":
    main()
