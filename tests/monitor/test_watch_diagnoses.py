"""babysit.watch() on plain loops (the README's) with a planted bug: the first finding names it.

Each test is a setup that reproduced one of issue 12's defects; the oracle is the planted
cause (and, for the gradient carry-over, what .grad holds by construction).
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from babysit.data import load_digits
from babysit.monitor.diagnose import Finding
from babysit.monitor.log import read_metrics
from babysit.monitor.watch import Monitor, watch

ALARM = ("warning", "error")


@pytest.fixture(scope="module")
def digits() -> Any:
    splits = load_digits(seed=0)
    return splits.train, splits.val


def _mlp(widths: list[int], act: type[nn.Module] = nn.ReLU, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(widths[:-1]):
        layers += [nn.Linear(a, b), act()]
    return nn.Sequential(*layers, nn.Linear(widths[-2], widths[-1]))


def _loop(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: Any,
    out: Path,
    *,
    epochs: int = 5,
    batch_size: int = 32,
    zero_grad: bool = True,
    l2: float = 0.0,
) -> Monitor:
    """The README's loop: DataLoader, cross-entropy, zero_grad / backward / step, mon.step."""
    (x, y), (xv, yv) = data
    g = torch.Generator().manual_seed(0)
    loader = DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True, generator=g)
    with watch(model, optimizer, log_dir=out, steps_per_epoch=len(loader)) as mon:
        for _ in range(epochs):
            for xb, yb in loader:
                loss = F.cross_entropy(model(xb), yb)
                if l2:
                    loss = loss + l2 * sum((p**2).sum() for p in model.parameters() if p.ndim > 1)
                if zero_grad:
                    optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                mon.step(loss)
            with torch.no_grad():
                val_acc = (model(xv).argmax(1) == yv).float().mean().item()
            mon.log_epoch(val_acc=val_acc)
    return mon


def _alarms(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity in ALARM]


def _lr_advice(findings: list[Finding]) -> set[str]:
    words = ("raise", "lower")
    return {w for f in findings for w in words if f"{w} the learning rate" in f.advice}


def test_a_12_layer_sigmoid_net_is_named_vanishing_not_raise_the_lr(
    digits: Any, tmp_path: Path
) -> None:
    model = _mlp([64, *[64] * 11, 10], nn.Sigmoid)  # PyTorch's default init: ~7x shrink a layer
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    found = _alarms(_loop(model, opt, digits, tmp_path, epochs=3).findings())
    assert found[0].code == "vanishing_gradients"
    assert found[0].evidence["total"] < 1e-3  # the shrink over the depth, not per layer
    assert "raise" not in _lr_advice(found)
    assert not [f for f in found if f.code.startswith("update_ratio")]


@pytest.mark.parametrize("where", ["optimizer", "loss"])
def test_a_far_too_strong_penalty_is_named_reg_too_strong(
    digits: Any, tmp_path: Path, where: str
) -> None:
    model = _mlp([64, 100, 10])
    if where == "optimizer":
        opt: torch.optim.Optimizer = torch.optim.SGD(
            model.parameters(), lr=0.05, momentum=0.9, weight_decay=0.5
        )
        mon = _loop(model, opt, digits, tmp_path)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        mon = _loop(model, opt, digits, tmp_path, l2=0.5)
    found = _alarms(mon.findings())
    assert found[0].code == "reg_too_strong"
    assert ("weight_decay=0.5" in found[0].message) == (where == "optimizer")
    assert _lr_advice(found) == set()  # no "lower the learning rate" for a penalty


def test_after_a_nan_the_divergence_and_what_led_to_it_are_all_that_is_said(
    digits: Any, tmp_path: Path
) -> None:
    model = _mlp([64, 100, 10])
    opt = torch.optim.SGD(model.parameters(), lr=500.0, momentum=0.9)
    found = _alarms(_loop(model, opt, digits, tmp_path, epochs=3).findings())
    assert [f.code for f in found] == ["diverged"]  # no dead_relu / underfitting on the wreck
    assert "learning rate was 500" in found[0].message and found[0].evidence["lr"] == 500


def test_dead_units_from_a_negative_bias_come_first(digits: Any, tmp_path: Path) -> None:
    model = _mlp([64, 100, 100, 10])
    with torch.no_grad():
        for layer in (model[0], model[2]):
            layer.bias.fill_(-5.0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    found = _alarms(_loop(model, opt, digits, tmp_path).findings())
    assert found[0].code == "dead_relu" and found[0].evidence["at_init"]
    assert {f.code for f in found} <= {"dead_relu", "vanishing_gradients"}


def test_a_frozen_layer_is_info_and_no_low_update_ratio(digits: Any, tmp_path: Path) -> None:
    model = _mlp([64, 256, 10])
    model[0].requires_grad_(False)  # fine-tune the head only; the optimizer holds them all
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    mon = _loop(model, opt, digits, tmp_path)
    findings = mon.findings()
    assert _alarms(findings) == []
    (info,) = [f for f in findings if f.code == "frozen_parameters"]
    assert info.severity == "info" and info.evidence["params"] == ["0.weight", "0.bias"]
    ratios = [r["values"] for r in read_metrics(tmp_path / "metrics.jsonl", kind="probe")]
    assert ratios and not any("0.weight" in v for v in ratios)  # never judged


def test_a_forgotten_zero_grad_is_named(digits: Any, tmp_path: Path) -> None:
    model = _mlp([64, 100, 10])
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    found = _alarms(_loop(model, opt, digits, tmp_path, zero_grad=False).findings())
    assert found[0].code == "grads_not_zeroed" and found[0].severity == "error"
    assert "zero_grad()" in found[0].advice


@pytest.mark.parametrize(
    ("how", "carried"),
    [("none", 1.0), ("set_to_none", 0.0), ("zeros", 0.0), ("accumulate_2", 0.0)],
)
def test_grad_carryover_is_what_grad_holds_before_the_next_backward(
    tmp_path: Path, how: str, carried: float
) -> None:
    model = _mlp([4, 8, 3])
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    g = torch.Generator().manual_seed(0)
    with watch(model, opt, log_dir=tmp_path, every=2) as mon:
        for _ in range(8):
            micro = 2 if how == "accumulate_2" else 1
            for _ in range(micro):  # accumulation on purpose: zeroed after each step
                x, y = torch.randn(16, 4, generator=g), torch.randint(0, 3, (16,), generator=g)
                (F.cross_entropy(model(x), y) / micro).backward()
            opt.step()
            if how != "none":
                opt.zero_grad(set_to_none=how != "zeros")
            mon.step(torch.tensor(1.0))
    shares = [
        v
        for r in read_metrics(tmp_path / "metrics.jsonl", kind="probe")
        if r["name"] == "grad_carryover"
        for v in r["values"].values()
    ]
    assert len(shares) >= 4 and shares == pytest.approx([carried] * len(shares), abs=1e-6)


def test_watch_writes_findings_json_at_each_epoch_and_on_close(digits: Any, tmp_path: Path) -> None:
    model = _mlp([64, 100, 10])
    opt = torch.optim.SGD(model.parameters(), lr=500.0, momentum=0.9)
    (x, y), _ = digits
    with watch(model, opt, log_dir=tmp_path) as mon:
        for i in range(20):
            loss = F.cross_entropy(model(x[i * 32 : (i + 1) * 32]), y[i * 32 : (i + 1) * 32])
            opt.zero_grad()
            loss.backward()
            opt.step()
            mon.step(loss)
        mon.log_epoch(val_acc=0.1)
        at_epoch = json.loads((tmp_path / "findings.json").read_text())
        assert [f["code"] for f in at_epoch] == ["diverged"]
    (tmp_path / "findings.json").unlink()
    mon.close()  # idempotent: already closed by the with block, writes nothing more
    assert not (tmp_path / "findings.json").exists()


def test_the_readme_loop_leaves_a_diagnosed_run_for_the_report(digits: Any, tmp_path: Path) -> None:
    from babysit.report.html import write_report

    model = _mlp([64, 100, 10])
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    _loop(model, opt, digits, tmp_path, epochs=2)
    assert json.loads((tmp_path / "findings.json").read_text()) == []
    page = write_report(tmp_path).read_text()
    assert "was not diagnosed" not in page and "No findings" in page


def test_the_watch_event_records_the_optimizer_weight_decay_and_frozen_params(
    tmp_path: Path,
) -> None:
    model = _mlp([4, 8, 3])
    model[2].weight.requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    with watch(model, opt, log_dir=tmp_path):
        pass
    (event,) = read_metrics(tmp_path / "metrics.jsonl", kind="event")
    assert (event["optimizer"], event["weight_decay"], event["frozen"]) == (
        "AdamW",
        0.05,
        ["2.weight"],
    )
    assert math.isfinite(event["weight_decay"])
