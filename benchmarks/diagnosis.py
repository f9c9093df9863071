"""Planted-pathology benchmark: does babysit.watch() name what went wrong, and only that?

Trains short runs on the bundled digits and spiral data with a plain PyTorch loop plus
``babysit.watch()`` (mirroring the trainer's config: [task] [model] [optim] [train]), each
with one planted problem, and healthy runs that must raise no finding of severity warning or
error. For each pathology the codes that count as naming it are declared next to it.

    .venv/bin/python benchmarks/diagnosis.py            # full: 5 seeds per pathology, 24 healthy
    .venv/bin/python benchmarks/diagnosis.py --quick    # 1 seed each, 8 healthy (what CI asserts)

Prints recall per pathology, the false-alarm rate (share of healthy runs with any warning or
error), and the goal (recall >= 95 %, false alarms <= 5 %); exits 1 when a goal is missed.
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from babysit.data import load_digits, make_spiral
from babysit.models import build_model
from babysit.monitor.diagnose import Finding
from babysit.monitor.watch import watch
from babysit.optim.build import create_optimizer
from babysit.tasks import l2_weights

RECALL_GOAL = 0.95
FALSE_ALARM_GOAL = 0.05
ALARM = ("warning", "error")  # the severities that count as a finding (recall and alarms)


@dataclass(frozen=True)
class Case:
    """A run recipe: ``config`` in the trainer's layout; ``codes`` name its pathology."""

    name: str
    config: dict[str, Any]
    codes: frozenset[str] = frozenset()  # empty: healthy

    def with_seed(self, seed: int) -> dict[str, Any]:
        cfg = {k: dict(v) for k, v in self.config.items()}
        cfg["train"]["seed"] = seed
        return cfg


def _cfg(task: str, model: dict[str, Any], optim: dict[str, Any], **train: Any) -> dict[str, Any]:
    base = {"epochs": 10, "batch_size": 64, "reg": 1e-4}
    return {"task": {"name": task}, "model": model, "optim": optim, "train": {**base, **train}}


MLP = {"name": "mlp", "hidden": [100], "activation": "relu", "init": "he"}
TANH = {"name": "mlp", "hidden": [100], "activation": "tanh", "init": "xavier"}
DEEP = {"name": "mlp", "hidden": [64] * 4, "activation": "relu", "init": "he"}
DEEP_TANH = {"name": "mlp", "hidden": [64] * 5, "activation": "tanh", "init": "he"}
CONVNET = {"name": "convnet", "channels": [8, 16], "hidden": [32]}
ADAM = {"rule": "adam", "lr": 1e-3}
MOMENTUM = {"rule": "momentum", "lr": 0.05, "mu": 0.9}

HEALTHY = [
    Case("digits mlp adam", _cfg("digits", MLP, ADAM)),
    Case("digits mlp momentum", _cfg("digits", MLP, MOMENTUM)),
    Case("digits mlp nesterov", _cfg("digits", MLP, {"rule": "nesterov", "lr": 0.05})),
    Case("digits mlp rmsprop", _cfg("digits", MLP, {"rule": "rmsprop", "lr": 1e-3})),
    Case("digits tanh adagrad", _cfg("digits", TANH, {"rule": "adagrad", "lr": 0.05})),
    Case("digits tanh sgd", _cfg("digits", TANH, {"rule": "sgd", "lr": 0.1})),
    Case("spiral mlp adam", _cfg("spiral", MLP, {"rule": "adam", "lr": 1e-2}, epochs=60)),
    Case("spiral mlp momentum", _cfg("spiral", MLP, {"rule": "momentum", "lr": 0.1}, epochs=60)),
    Case("digits deep relu adam", _cfg("digits", DEEP, ADAM)),
    Case(
        "digits deep tanh nesterov",
        _cfg(
            "digits",
            {**DEEP, "activation": "tanh", "init": "xavier"},
            {"rule": "nesterov", "lr": 0.02},
        ),
    ),
    Case("digits-image convnet adam", _cfg("digits-image", CONVNET, ADAM, epochs=5)),
]

PATHOLOGIES = [
    Case(
        "lr x100",
        _cfg("digits", MLP, {"rule": "adam", "lr": 1e-1}),
        frozenset({"lr_too_high", "update_ratio_high", "diverged"}),
    ),
    Case(
        "lr /100",
        _cfg("digits", MLP, {"rule": "adam", "lr": 1e-5}),
        frozenset({"lr_too_low", "update_ratio_low"}),
    ),
    Case(
        "batch size 2", _cfg("digits", MLP, ADAM, batch_size=2, epochs=2), frozenset({"loss_noisy"})
    ),
    Case(
        "huge net, no reg (overfitting)",
        _cfg(
            "spiral-noisy",
            {**MLP, "hidden": [500, 500]},
            {"rule": "adam", "lr": 3e-3},
            reg=0.0,
            epochs=300,
        ),
        frozenset({"overfitting"}),
    ),
    Case(
        "softmax on spiral (underfitting)",
        _cfg("spiral", {"name": "softmax"}, {"rule": "adam", "lr": 1e-2}, epochs=60),
        frozenset({"underfitting"}),
    ),
    Case(
        "deep tanh, he init x0.01 (vanishing)",
        _cfg("digits", {**DEEP_TANH, "init_scale": 0.01}, MOMENTUM),
        frozenset({"vanishing_gradients"}),
    ),
    Case(
        "relu bias init -5 (dead units)",
        _cfg("digits", {**MLP, "hidden": [100, 100], "bias_init": -5.0}, ADAM),
        frozenset({"dead_relu"}),
    ),
    Case(
        "tanh, init x10 (saturation)",
        _cfg("digits", {**TANH, "init_scale": 10.0}, ADAM),
        frozenset({"saturation"}),
    ),
    Case(
        "lr x1e4 (diverged)",
        _cfg("digits", MLP, {"rule": "momentum", "lr": 500.0, "mu": 0.9}),
        frozenset({"diverged", "lr_too_high"}),
    ),
]


TASKS = {  # the bundled data sets; "spiral-noisy" has overlapping arms, to overfit on
    "digits": lambda seed: load_digits(seed=seed),
    "digits-image": lambda seed: load_digits(seed=seed, image=True),
    "spiral": lambda seed: make_spiral(seed=seed),
    "spiral-noisy": lambda seed: make_spiral(seed=seed, noise=0.8),
}


def _data(task: str, seed: int) -> tuple[Any, Any, int, tuple[int, ...]]:
    splits = TASKS[task](seed)
    return splits.train, splits.val, splits.num_classes, tuple(splits.input_shape)


def train_run(config: dict[str, Any], out: Path) -> list[Finding]:
    """Train ``config`` with a plain loop under ``watch()``; return the monitor's findings."""
    tcfg = config["train"]
    seed = int(tcfg["seed"])
    (x_tr, y_tr), (x_va, y_va), num_classes, shape = _data(config["task"]["name"], seed)
    torch.manual_seed(seed)
    model_cfg = {k: v for k, v in config["model"].items() if k != "name"}
    model = build_model(
        config["model"]["name"], model_cfg, input_shape=shape, num_classes=num_classes
    )
    optim = dict(config["optim"])
    optimizer = create_optimizer(model.parameters(), optim.pop("rule"), optim)
    bs, reg, n = int(tcfg["batch_size"]), float(tcfg["reg"]), x_tr.shape[0]
    steps = math.ceil(n / bs)
    order = torch.Generator().manual_seed(seed)
    monitor = watch(
        model, optimizer, log_dir=out, steps_per_epoch=steps, chance_loss=math.log(num_classes)
    )
    with monitor:
        for _ in range(int(tcfg["epochs"])):
            model.train()
            loss_sum = torch.zeros((), dtype=torch.float64)
            correct = torch.zeros((), dtype=torch.float64)
            perm = torch.randperm(n, generator=order)
            for i in range(steps):
                idx = perm[i * bs : (i + 1) * bs]
                x, y = x_tr[idx], y_tr[idx]
                scores = model(x)
                data_loss = F.cross_entropy(scores, y)
                reg_loss = l2_weights(model, reg)
                loss = data_loss + reg_loss
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                monitor.step(loss, data_loss=data_loss, reg_loss=reg_loss)
                loss_sum += data_loss.detach().double() * len(idx)
                correct += (scores.detach().argmax(1) == y).sum()
            train_loss = (loss_sum / n).item()
            if not math.isfinite(train_loss):  # the trainer's divergence guard, once an epoch
                monitor.event("diverged", loss=train_loss)
                break
            model.eval()
            with torch.no_grad():
                val_scores = model(x_va)
                val_loss = F.cross_entropy(val_scores, y_va).item()
                val_acc = (val_scores.argmax(1) == y_va).double().mean().item()
            monitor.log_epoch(
                train_loss=train_loss,
                train_acc=(correct / n).item(),
                val_loss=val_loss,
                val_acc=val_acc,
            )
    return monitor.findings()


@dataclass
class Result:
    case: Case
    seed: int
    findings: list[Finding] = field(default_factory=list)

    @property
    def alarms(self) -> set[str]:
        return {f.code for f in self.findings if f.severity in ALARM}

    @property
    def named(self) -> bool:
        return bool(self.alarms & self.case.codes)


def run_suite(cases: Iterable[Case], seeds: Iterable[int], out: Path) -> list[Result]:
    results = []
    for case in cases:
        for seed in seeds:
            run_dir = (
                out / f"{case.name.split(' (')[0].replace(' ', '_').replace('/', 'div')}-s{seed}"
            )
            shutil.rmtree(run_dir, ignore_errors=True)  # metrics.jsonl is appended to
            results.append(Result(case, seed, train_run(case.with_seed(seed), run_dir)))
    return results


def summarise(pathologies: list[Result], healthy: list[Result]) -> tuple[dict[str, float], float]:
    """Recall per pathology (share of its runs whose alarms include a naming code), alarm rate."""
    recall: dict[str, float] = {}
    for name in dict.fromkeys(r.case.name for r in pathologies):
        runs = [r for r in pathologies if r.case.name == name]
        recall[name] = sum(r.named for r in runs) / len(runs)
    false_alarms = sum(bool(r.alarms) for r in healthy) / max(len(healthy), 1)
    return recall, false_alarms


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 seed per pathology, 8 healthy runs")
    parser.add_argument("--seeds", type=int, default=5, help="seeds per pathology (full run)")
    parser.add_argument("--out", type=Path, default=None, help="keep the run dirs here")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every run's findings")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    seeds = range(1) if args.quick else range(args.seeds)
    healthy_seeds = range(1) if args.quick else range(3)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        sick = run_suite(PATHOLOGIES, seeds, out)
        healthy = run_suite(HEALTHY, healthy_seeds, out)
    recall, false_alarms = summarise(sick, healthy)
    for r in (sick + healthy) if args.verbose else []:
        print(f"{r.case.name} seed {r.seed}: {sorted(r.alarms) or '-'}")
        for f in r.findings:
            print(f"    {f}")
    print(f"{'pathology':40s} {'recall':>7s}  codes that name it")
    for case in PATHOLOGIES:
        print(f"{case.name:40s} {recall[case.name]:7.0%}  {', '.join(sorted(case.codes))}")
    alarmed = [f"{r.case.name} s{r.seed}: {sorted(r.alarms)}" for r in healthy if r.alarms]
    print(f"false alarms: {false_alarms:.1%} of {len(healthy)} healthy runs {alarmed or ''}")
    worst = min(recall.values())
    print(
        f"goal: recall >= {RECALL_GOAL:.0%} (worst {worst:.0%}), false alarms <= "
        f"{FALSE_ALARM_GOAL:.0%} ({false_alarms:.1%}); {time.perf_counter() - start:.0f} s"
    )
    return 0 if worst >= RECALL_GOAL and false_alarms <= FALSE_ALARM_GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
