"""What babysit.watch() costs a training step: the same loop plain and watched, in one run.

    .venv/bin/python benchmarks/monitor_overhead.py                 # CPU, one thread
    .venv/bin/python benchmarks/monitor_overhead.py --device cuda   # on a GPU

Two loops, each run plain, with ``watch()`` at its default settings, and with histograms
every step (``every=1, hist_every=1``) for comparison. Each round runs the modes back to back;
the figure is the median over rounds of each mode's time / the plain time of the same round
(pairing cancels the drift of a shared machine), with the quartiles to show the noise. Each
watched run includes ``watch()`` itself, an epoch record per epoch and ``close()``. On a CPU
the clock is this process's CPU time (``time.process_time``, one torch thread), which other
users of a shared machine do not inflate; on a GPU it is wall time, the device synchronised.

(a) a convnet on 3x32x32 inputs (conv 16, conv 32, fc 64; batch 64): a step >= 5 ms on a CPU.
(b) the digits MLP (64 -> 100 -> 10, batch 64): a step of about 0.2 ms, where anything
    written per step shows. Goals: (a) <= 1.05x, (b) <= 1.25x.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from babysit.data import load_digits
from babysit.models import build_model
from babysit.monitor.watch import watch

MODES: dict[str, dict[str, Any] | None] = {
    "plain": None,
    "watch()": {},
    "every-step histograms": {"every": 1, "hist_every": 1},
}


@dataclass
class Loop:
    """A model, its optimizer and its data (already on the device), rebuilt for every run."""

    name: str
    make: Callable[[torch.device], tuple[torch.nn.Module, torch.optim.Optimizer, Any, Any]]
    steps: int
    goal: float
    batch: int = 64


def _convnet(device: torch.device) -> tuple[Any, Any, Any, Any]:
    torch.manual_seed(0)
    model = build_model(
        "convnet", {"channels": [16, 32], "hidden": [64]}, input_shape=(3, 32, 32), num_classes=10
    ).to(device)
    x = torch.randn(1024, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (1024,), device=device)
    return model, torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9), x, y


def _digits(device: torch.device) -> tuple[Any, Any, Any, Any]:
    torch.manual_seed(0)
    (x, y) = load_digits(seed=0).train
    model = build_model("mlp", {"hidden": [100]}, input_shape=(64,), num_classes=10).to(device)
    return model, torch.optim.Adam(model.parameters(), lr=1e-3), x.to(device), y.to(device)


def run(loop: Loop, mode: dict[str, Any] | None, device: torch.device, out: Path) -> float:
    """Seconds for ``loop.steps`` training steps (plus watch() and close() when watched)."""
    model, optimizer, x, y = loop.make(device)
    per_epoch = x.shape[0] // loop.batch
    clock = time.perf_counter if device.type == "cuda" else time.process_time
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = clock()
    monitor = (
        None
        if mode is None
        else watch(model, optimizer, log_dir=out, steps_per_epoch=per_epoch, **mode)
    )
    for step in range(loop.steps):
        i = step % per_epoch * loop.batch
        loss = F.cross_entropy(model(x[i : i + loop.batch]), y[i : i + loop.batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if monitor is not None:
            monitor.step(loss)
            if (step + 1) % per_epoch == 0:
                monitor.log_epoch(train_loss=loss)
    if monitor is not None:
        monitor.close()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return clock() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    loops = [
        Loop(
            "(a) convnet 3x32x32", _convnet, steps=200 if device.type == "cpu" else 2000, goal=1.05
        ),
        Loop("(b) digits MLP", _digits, steps=3000, goal=1.25),
    ]
    ok = True
    print(f"device {device}, {args.repeats} rounds; time / plain time of the same round")
    for loop in loops:
        times: dict[str, list[float]] = {name: [] for name in MODES}
        with tempfile.TemporaryDirectory() as tmp:
            for r in range(args.repeats + 1):  # round 0 warms up and is not counted
                for name, mode in MODES.items():
                    seconds = run(loop, mode, device, Path(tmp) / f"{name}-{r}")
                    if r:
                        times[name].append(seconds)
        plain = statistics.median(times["plain"])
        print(f"{loop.name}: plain step {1e3 * plain / loop.steps:.3f} ms over {loop.steps} steps")
        for name in MODES:
            ratios = [t / p for t, p in zip(times[name], times["plain"], strict=True)]
            q1, median, q3 = statistics.quantiles(ratios, n=4)
            print(f"    {name:24s} {median:6.3f}x  (quartiles {q1:.3f} - {q3:.3f})")
            if name == "watch()":
                ok &= median <= loop.goal
                verdict = "met" if median <= loop.goal else "MISSED"
        print(f"    goal watch() <= {loop.goal}x: {verdict}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
