"""Benchmark: babysit.gradcheck against torch.autograd.gradcheck(fast_mode=True), per model.

Both check the same loss, in float64, as a function of every parameter tensor, on the same
samples (babysit with ``datapoints`` = the whole batch, its other options at their defaults;
fast mode on a function of the parameter tensors). Both are warmed up, then timed as the
median CPU time of ``--repeat`` interleaved rounds. Models and goals (babysit / fast mode):

- mlp: 784-1000-256-10 ReLU (1.04M parameters), batch 8: <= 1x
- convnet: 3 x (conv 3x3, BatchNorm in train mode, ReLU, max-pool), linear; 8 CIFAR-sized
  images: <= 2x
- transformer: nanoGPT's block (LayerNorm, causal attention, GELU MLP), embeddings, a head;
  8 sequences of 16 tokens: <= 2x
- resnet: the CIFAR ResNet-18 of kuangliu/pytorch-cifar at width 8 (62 tensors, BatchNorm
  in train mode), 4 images: a verdict for every tensor in < 10x

Fast mode gives one pass/fail for all parameters together; babysit a verdict per tensor. When
fast mode fails it reruns the failing input in slow mode (about two forwards per entry) to
report; ``failing`` times both on the MLP with a planted bug in its last layer. (The data
are draws on which fast mode passes these correct models: on others it fails the convnet at
a ReLU / max-pool kink, and its slow-mode rerun of the first layer takes minutes.)

    python benchmarks/gradcheck.py [--repeat 3] [--threads 1] [--only mlp,convnet]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

import babysit.checks.gradcheck.check as bg

Case = tuple[nn.Module, Callable[[Tensor, Tensor], Tensor], Tensor, Tensor, float]


def mlp() -> Case:
    model = nn.Sequential(
        nn.Linear(784, 1000), nn.ReLU(), nn.Linear(1000, 256), nn.ReLU(), nn.Linear(256, 10)
    )
    x = torch.randn(8, 784, dtype=torch.float64)
    return model, F.cross_entropy, x, torch.randint(0, 10, (8,)), 1.0


def convnet() -> Case:
    layers: list[nn.Module] = []
    for cin, cout in ((3, 16), (16, 32), (32, 32)):
        layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]
        layers.append(nn.MaxPool2d(2))
    model = nn.Sequential(*layers, nn.Flatten(), nn.Linear(32 * 4 * 4, 10))
    x = torch.randn(8, 3, 32, 32, dtype=torch.float64)
    return model, F.cross_entropy, x, torch.randint(0, 10, (8,)), 2.0


class Block(nn.Module):
    """nanoGPT's transformer block."""

    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc, self.out = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
        self.heads = heads

    def forward(self, x: Tensor) -> Tensor:
        b, t, c = x.shape
        q, k, v = self.attn(self.ln1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, c))
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class TinyGPT(nn.Module):
    def __init__(self, vocab: int = 65, d: int = 64, t: int = 16) -> None:
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, d), nn.Embedding(t, d)
        self.block, self.ln = Block(d, 4), nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)

    def forward(self, idx: Tensor) -> Tensor:
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
        return self.head(self.ln(self.block(x)))


def lm_loss(logits: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(logits.flatten(0, 1), y.flatten())


def transformer() -> Case:
    idx, y = torch.randint(0, 65, (8, 16)), torch.randint(0, 65, (8, 16))
    return TinyGPT(), lm_loss, idx, y, 2.0


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """kuangliu/pytorch-cifar's ResNet-18, at a width of ``w`` (64 there)."""

    def __init__(self, w: int = 8) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w)
        blocks, cin = [], w
        for i in range(4):
            for stride in (1 if i == 0 else 2, 1):
                blocks.append(BasicBlock(cin, w * 2**i, stride))
                cin = w * 2**i
        self.layers, self.linear = nn.Sequential(*blocks), nn.Linear(cin, 10)

    def forward(self, x: Tensor) -> Tensor:
        out = self.layers(F.relu(self.bn1(self.conv1(x))))
        return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))


def resnet() -> Case:
    model, x = ResNet18(), torch.randn(4, 3, 32, 32, dtype=torch.float64)
    return model, F.cross_entropy, x, torch.randint(0, 10, (4,)), 10.0


CASES: dict[str, Callable[[], Case]] = {
    "mlp": mlp,
    "convnet": convnet,
    "transformer": transformer,
    "resnet": resnet,
}


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


def fast_mode(model: nn.Module, loss_fn: Any, x: Tensor, y: Tensor) -> Callable[[], bool]:
    """torch.autograd.gradcheck(fast_mode=True) of the same loss of every parameter tensor."""
    names = [n for n, _ in model.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_(True) for p in model.parameters())

    def loss(*ps: Tensor) -> Tensor:
        return loss_fn(functional_call(model, dict(zip(names, ps, strict=True)), (x,)), y)

    return lambda: torch.autograd.gradcheck(loss, params, fast_mode=True, raise_exception=False)


def bench(name: str, repeat: int) -> None:
    torch.manual_seed(0)
    model, loss_fn, x, y, goal = CASES[name]()
    model = model.double()
    x = x.double() if x.is_floating_point() else x

    def ours() -> bg.GradcheckReport:
        return bg.gradcheck(model, loss_fn, x, y, datapoints=len(x))

    t = timed({"fast": fast_mode(model, loss_fn, x, y), "babysit": ours}, repeat)
    report = ours()
    tensors = [p for p in report.params if p.name != "whole batch"]
    verdicts = {v: sum(p.verdict == v for p in tensors) for v in ("ok", "warn", "fail")}
    ratio = t["babysit"] / t["fast"]
    print(
        f"{name:12s} tensors {len(tensors):3d}  fast_mode {t['fast'] * 1e3:8.1f} ms  babysit "
        f"{t['babysit'] * 1e3:8.1f} ms  ratio {ratio:5.2f} (goal <= {goal:g})  verdicts "
        f"{verdicts}  passed {report.passed}",
        flush=True,
    )


class Doubled(torch.autograd.Function):
    """A linear layer whose weight gradient is twice too large (the planted bug)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, w: Tensor, b: Tensor) -> Tensor:
        ctx.save_for_backward(x, w)
        return x @ w.T + b

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x, w = ctx.saved_tensors
        return g @ w, 2 * g.T @ x, g.sum(0)


class PlantedLast(nn.Linear):
    def forward(self, x: Tensor) -> Tensor:
        return Doubled.apply(x, self.weight, self.bias)


def failing() -> None:
    """A failing check: fast mode falls back to slow mode for the failing input."""
    torch.manual_seed(0)
    model, loss_fn, x, y, _ = mlp()
    model[4] = PlantedLast(256, 10)
    model, x = model.double(), x.double()
    start = time.process_time()
    torch_ok = fast_mode(model, loss_fn, x, y)()
    t_fast = time.process_time() - start
    start = time.process_time()
    report = bg.gradcheck(model, loss_fn, x, y, datapoints=len(x))
    t_ours = time.process_time() - start
    print(
        f"{'failing mlp':12s} fast_mode (then slow mode) {t_fast:6.2f} s, passed {torch_ok}; "
        f"babysit {t_ours:6.2f} s, failed {sorted({p.name for p in report.failures})}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave)")
    parser.add_argument("--only", default=",".join([*CASES, "failing"]))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"threads: {torch.get_num_threads()}  repeat: {args.repeat}", flush=True)
    for name in args.only.split(","):
        failing() if name == "failing" else bench(name, args.repeat)


if __name__ == "__main__":
    main()
