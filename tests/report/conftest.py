"""Run dirs for the report tests, written in the agreed record formats.

``make_run_dir`` trains a real small MLP on the digits data set (sklearn ships it offline)
with SGD + momentum and a step lr schedule, and logs what the monitor logs: batch records,
epoch records, update ratios, activation stats, gradient norms, activation and gradient
histograms, a first-layer filter grid PNG, events, findings, gradcheck and sanity reports.
Nothing here is produced by the report itself.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from sklearn.datasets import load_digits
from torch import nn

from babysit.monitor.log import MetricsWriter

from .study_dirs import make_searched_study, make_study_dir

FINDINGS = [
    {
        "code": "loss_noisy",
        "severity": "info",
        "step": 40,
        "message": "The minibatch loss wiggles a lot.",
        "advice": "Try a larger batch size.",
        "evidence": {"cv": 0.31},
    },
    {
        "code": "dead_relu",
        "severity": "warning",
        "step": 120,
        "message": "fc1: 37% of ReLU units never fired over the last window.",
        "advice": "Lower the learning rate or use He init.",
        "evidence": {"layer": "fc1", "dead": 0.37},
    },
    {
        "code": "lr_too_high",
        "severity": "error",
        "step": 200,
        "message": "Update:weight ratio of fc1.weight is 3e-2, far above ~1e-3.",
        "advice": "Divide the learning rate by 10.",
        "evidence": {"ratio": 0.03},
    },
]

GRADCHECK = {
    "passed": False,
    "thresholds": {"ok": 1e-7, "warn": 1e-4, "fail": 1e-2},
    "params": [
        {
            "name": "fc1.weight",
            "shape": [32, 64],
            "part": "total",
            "checked": 10,
            "max_rel_error": 3.2e-9,
            "kinks": 1,
            "verdict": "ok",
            "worst": {},
        },
        {
            "name": "fc1.bias",
            "shape": [32],
            "part": "total",
            "checked": 10,
            "max_rel_error": 2.5e-5,
            "kinks": 0,
            "verdict": "warn",
            "worst": {},
        },
        {
            "name": "fc2.weight",
            "shape": [10, 32],
            "part": "total",
            "checked": 10,
            "max_rel_error": 0.41,
            "kinks": 0,
            "verdict": "fail",
            "worst": {},
        },
    ],
}

SANITY = {
    "passed": True,
    "checks": [
        {
            "name": "chance_loss",
            "passed": True,
            "expected": 2.302,
            "observed": 2.297,
            "advice": "Initial loss matches -ln(1/10).",
        },
        {
            "name": "reg_raises_loss",
            "passed": True,
            "expected": "> 2.297",
            "observed": 2.41,
            "advice": "",
        },
        {"name": "overfit_small", "passed": True, "expected": 0.0, "observed": 0.004, "advice": ""},
    ],
}

CONFIG = """\
[task]
name = "digits-mlp"
[model]
hidden = [32]
activation = "relu"
[optim]
rule = "momentum"
lr = 0.05
mu = 0.9
[train]
epochs = 6
batch_size = 64
reg = 1e-4
"""


def _hist(values: torch.Tensor, bins: int = 30) -> dict[str, Any]:
    counts, edges = np.histogram(values.detach().double().numpy(), bins=bins)
    return {"edges": edges.tolist(), "counts": counts.tolist()}


def _filter_grid(weight: torch.Tensor, path: Path) -> None:
    """fc1.weight (32, 64) as a 4 x 8 grid of 8 x 8 digit-pixel filters."""
    fig = Figure(figsize=(4, 2))
    for i, w in enumerate(weight.detach().reshape(-1, 8, 8)[:32]):
        ax = fig.add_subplot(4, 8, i + 1)
        ax.imshow(w.numpy(), cmap="gray")
        ax.set_axis_off()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=60)


def _train(out: Path, epochs: int, extras: bool) -> None:
    torch.manual_seed(0)
    digits = load_digits()
    x = torch.tensor(digits.data / 16.0, dtype=torch.float32)
    y = torch.tensor(digits.target)
    xtr, ytr, xva, yva = x[:1400], y[:1400], x[1400:], y[1400:]
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))

    def pname(n: str) -> str:  # "0.weight" -> "fc1.weight"
        return {"0": "fc1", "2": "fc2"}[n[0]] + n[1:]

    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.3)
    batch, steps_per_epoch = 50, 1400 // 50
    acts: dict[str, torch.Tensor] = {}
    model[1].register_forward_hook(lambda m, i, o: acts.__setitem__("fc1.relu", o.detach()))
    with MetricsWriter(out / "metrics.jsonl") as log:
        step = 0
        for epoch in range(epochs):
            perm = torch.randperm(1400)
            for b in range(steps_per_epoch):
                idx = perm[b * batch : (b + 1) * batch]
                before = {n: p.detach().clone() for n, p in model.named_parameters()}
                data_loss = nn.functional.cross_entropy(model(xtr[idx]), ytr[idx])
                reg_loss = 1e-4 * sum((p**2).sum() for p in model.parameters() if p.ndim >= 2)
                loss = data_loss + reg_loss
                opt.zero_grad()
                loss.backward()
                opt.step()
                step += 1
                ep = epoch + (b + 1) / steps_per_epoch
                lr = opt.param_groups[0]["lr"]
                log.write(
                    {
                        "kind": "batch",
                        "step": step,
                        "epoch": ep,
                        "loss": loss.item(),
                        "data_loss": data_loss.item(),
                        "reg_loss": reg_loss.item(),
                        "lr": lr,
                        "mu": 0.9,
                    }
                )
                if not extras or step % 4:
                    continue
                params = dict(model.named_parameters())
                # ||dw|| / ||w|| of this step, per parameter (the notes' update ratio)
                ratio = {
                    pname(n): ((p.detach() - before[n]).norm() / p.detach().norm()).item()
                    for n, p in params.items()
                }
                a = acts["fc1.relu"]
                stats = {
                    "fc1.relu": {
                        "mean": a.mean().item(),
                        "std": a.std().item(),
                        "dead": (a.amax(0) <= 0).double().mean().item(),
                        "saturated": None,
                    }
                }
                grads = {pname(n): p.grad.norm().item() for n, p in params.items()}
                for name, values in (
                    ("update_ratio", ratio),
                    ("act_stats", stats),
                    ("grad_norm", grads),
                ):
                    log.write(
                        {"kind": "probe", "step": step, "epoch": ep, "name": name, "values": values}
                    )
                if step % 28 == 0:
                    log.write(
                        {
                            "kind": "probe",
                            "step": step,
                            "epoch": ep,
                            "name": "act_hist",
                            "values": {"fc1.relu": _hist(a)},
                        }
                    )
                    ghist = {pname(n): _hist(p.grad) for n, p in params.items()}
                    log.write(
                        {
                            "kind": "probe",
                            "step": step,
                            "epoch": ep,
                            "name": "grad_hist",
                            "values": ghist,
                        }
                    )
            sched.step()
            with torch.no_grad():
                tr_out, va_out = model(xtr), model(xva)
                record = {
                    "kind": "epoch",
                    "epoch": epoch + 1,
                    "step": step,
                    "train_loss": nn.functional.cross_entropy(tr_out, ytr).item(),
                    "train_acc": (tr_out.argmax(1) == ytr).double().mean().item(),
                    "val_loss": nn.functional.cross_entropy(va_out, yva).item(),
                    "val_acc": (va_out.argmax(1) == yva).double().mean().item(),
                }
            log.write(record)
            if extras:
                rel = f"filters/step={step:06d}.png"
                _filter_grid(model[0].weight, out / rel)
                log.write(
                    {
                        "kind": "probe",
                        "step": step,
                        "epoch": float(epoch + 1),
                        "name": "filters",
                        "values": {"path": rel},
                    }
                )
                log.write({"kind": "event", "step": step, "what": "checkpoint"})
            log.flush()
        if extras:
            log.write({"kind": "event", "step": steps_per_epoch * 2, "what": "resumed"})


def make_run_dir(path: Path, *, epochs: int = 6, extras: bool = True) -> Path:
    """A run dir of a real short training run; ``extras=False``: a user's loop (batch+epoch)."""
    path.mkdir(parents=True, exist_ok=True)
    _train(path, epochs, extras)
    if extras:
        (path / "config.toml").write_text(CONFIG, encoding="utf-8")
        (path / "findings.json").write_text(json.dumps(FINDINGS), encoding="utf-8")
        (path / "gradcheck.json").write_text(json.dumps(GRADCHECK), encoding="utf-8")
        (path / "sanity.json").write_text(json.dumps(SANITY), encoding="utf-8")
    return path


@pytest.fixture
def findings() -> list[dict[str, Any]]:
    """The findings written to the full run's findings.json."""
    return [dict(f) for f in FINDINGS]


@pytest.fixture
def gradcheck_report() -> dict[str, Any]:
    """The full run's gradcheck.json."""
    return json.loads(json.dumps(GRADCHECK))


@pytest.fixture
def make_run() -> Callable[..., Path]:
    """``make_run(path, *, epochs=6, extras=True)``: write a run dir there (see make_run_dir)."""
    return make_run_dir


@pytest.fixture(scope="session")
def full_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete run dir (every record kind); tests copy it before writing into it."""
    return make_run_dir(tmp_path_factory.mktemp("full") / "run")


@pytest.fixture
def run_copy(full_run: Path, tmp_path: Path) -> Callable[[], Path]:
    import shutil

    def copy() -> Path:
        return Path(shutil.copytree(full_run, tmp_path / "run"))

    return copy


@pytest.fixture
def synthetic_study(tmp_path: Path) -> Path:
    """The hand-written study dir (every trial state, a border warning): see study_dirs.py."""
    return make_study_dir(tmp_path / "study")


@pytest.fixture(scope="session")
def searched_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A study dir from a real two-stage search on digits (shared: tests only add reports)."""
    return make_searched_study(tmp_path_factory.mktemp("search") / "study")
