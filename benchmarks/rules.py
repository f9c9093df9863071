"""One update of P stacked MLPs with rules.step versus P separate torch.optim optimizers.

The population trainer keeps P models as one stacked tensor per parameter (leading dim P)
and updates them with one ``babysit.optim.rules.step`` call, each member with its own lr;
the alternative is P models with P torch.optim optimizers (torch's default implementation
for the device). Sizes are the digits MLP: 64 -> 100 -> 10.

    .venv/bin/python benchmarks/rules.py                 # all rules, P=256, CPU
    .venv/bin/python benchmarks/rules.py --rule adam --device cuda

Prints, per rule, the median time of one update each way and the ratio separate/stacked
(above 1: the stacked update is that many times faster).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from babysit.optim import rules
from babysit.optim.build import create_optimizer

SIZES = (64, 100, 10)  # digits: 8x8 pixels, hidden=[100] (the config's default), 10 classes


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(SIZES[0], SIZES[1]), nn.ReLU(), nn.Linear(SIZES[1], SIZES[2]))


def _median_seconds(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    for _ in range(3):  # warm-up: allocator, lazy state, kernels
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench(rule: str, population: int, device: torch.device, repeats: int) -> tuple[float, float]:
    """(stacked seconds, separate seconds) for one update of ``population`` MLPs."""
    torch.manual_seed(0)
    models = [_mlp().to(device) for _ in range(population)]
    # stacked: one tensor (P, ...) per parameter name; the same gradients reach both sides
    names = [n for n, _ in models[0].named_parameters()]
    w = {n: torch.stack([dict(m.named_parameters())[n].detach() for m in models]) for n in names}
    dw = {n: torch.randn_like(x) for n, x in w.items()}
    for i, m in enumerate(models):
        for n, p in m.named_parameters():
            p.grad = dw[n][i].clone()
    # (P,) learning rates: each member its own, as in a hyperparameter search
    lrs = 10 ** torch.empty(population, device=device).uniform_(-4, -2)
    hp = {"mu": 0.9, "decay_rate": 0.99, "eps": 1e-8, "beta1": 0.9, "beta2": 0.999}
    state = {"value": rules.init_state(rule, w)}

    def stacked() -> None:
        _, state["value"] = rules.step(rule, w, dw, state["value"], lr=lrs, **hp)

    opts = [
        create_optimizer(m.parameters(), rule, {**hp, "lr": float(lr)})
        for m, lr in zip(models, lrs, strict=True)
    ]

    def separate() -> None:
        with torch.no_grad():
            for opt in opts:
                opt.step()

    return _median_seconds(stacked, device, repeats), _median_seconds(separate, device, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rule", choices=rules.RULES, action="append")
    parser.add_argument("--population", type=int, default=256)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"P={args.population} MLPs {'-'.join(map(str, SIZES))}, device={device}, "
          f"torch {torch.__version__}, threads={torch.get_num_threads()}")  # fmt: skip
    print(f"{'rule':<10}{'stacked ms':>12}{'separate ms':>13}{'ratio':>8}")
    for rule in args.rule or rules.RULES:
        t_stacked, t_separate = bench(rule, args.population, device, args.repeats)
        print(
            f"{rule:<10}{t_stacked * 1e3:>12.2f}{t_separate * 1e3:>13.2f}"
            f"{t_separate / t_stacked:>8.1f}"
        )


if __name__ == "__main__":
    main()
