"""Sanity checks against the notes' numbers, independent float64 losses, and planted bugs."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

import babysit.tasks
from babysit.checks.sanity.check import (
    CHECKS,
    SanityInputError,
    SanityOptions,
    SanityReport,
    sanity_check,
    sanity_task,
)
from babysit.errors import BabysitError
from babysit.tasks import Task, l2_weights

LN10 = math.log(10)  # the notes: -ln(1/10) = 2.302 for 10-class softmax at chance


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """Digits, standardised per feature: x (1797, 64) float32, y (1797,) long."""
    d = load_digits()
    std = d.data.std(0)
    x = (d.data - d.data.mean(0)) / np.where(std > 0, std, 1.0)
    return torch.tensor(x, dtype=torch.float32), torch.tensor(d.target, dtype=torch.long)


def mlp(scale: float = 1.0, *, seed: int = 0, out: int = 10) -> nn.Sequential:
    """64-100-10 ReLU net: He init, last layer x0.01 (the notes' small init); all std x scale."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(64, 100), nn.ReLU(), nn.Linear(100, out))
    with torch.no_grad():
        net[0].weight.normal_(0.0, math.sqrt(2 / 64) * scale)
        net[2].weight.normal_(0.0, math.sqrt(2 / 100) * 0.01 * scale)
        net[0].bias.zero_()
        net[2].bias.zero_()
    return net


class Detached(nn.Module):
    """A planted bug: the output is cut from the graph."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).detach()


class RandomLabels(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """A planted bug: every read of an example draws a fresh random label."""

    def __init__(self, x: torch.Tensor) -> None:
        self.x = x

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[i], torch.randint(0, 10, ())


class ConstantScores(nn.Module):
    """Scores (N, C) that ignore the input: a known loss at 'init'."""

    def __init__(self, scores: torch.Tensor) -> None:
        super().__init__()
        self.scores = nn.Parameter(scores)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scores.expand(len(x), -1)


def failed(report: SanityReport) -> set[str]:
    return {c.name for c in report.checks if not c.passed}


def test_checks_run_in_the_notes_order() -> None:
    assert list(CHECKS) == ["chance_loss", "reg_raises_loss", "overfit_small"]


def test_the_order_is_stated_not_decided_by_which_module_loads_first() -> None:
    # A fresh interpreter that loads the overfit check's module first, then registers one.
    code = (
        "import babysit.checks.sanity.overfit\n"
        "from babysit.checks.sanity import CHECKS, register_check\n"
        "register_check('mine')(lambda ctx: None)\n"
        "print(','.join(CHECKS))"
    )
    src = str(Path(babysit.tasks.__file__).parents[1])  # the babysit these tests import
    env = {**os.environ, "PYTHONPATH": src}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert out.stdout.strip() == "chance_loss,reg_raises_loss,overfit_small,mine"


def test_healthy_mlp_passes_every_check(digits: Any) -> None:
    report = sanity_check(mlp(), nn.CrossEntropyLoss(), digits, num_classes=10)
    assert report.passed, str(report)
    assert [c.verdict for c in report.checks] == ["ok", "ok", "ok"]
    assert report["chance_loss"].expected == pytest.approx(2.302, abs=1e-3)


def test_observed_chance_loss_is_cross_entropy_at_init(digits: Any) -> None:
    x, y = digits[0][:300], digits[1][:300]  # under chance_examples: every example is used
    model = mlp()
    with torch.no_grad():  # independent oracle: float64 cross-entropy of a float64 copy
        oracle = F.cross_entropy(mlp().double()(x.double()), y).item()
    check = sanity_check(model, nn.CrossEntropyLoss(), (x, y), num_classes=10)["chance_loss"]
    assert check.observed == pytest.approx(oracle, abs=1e-5)


@pytest.mark.parametrize(("a", "passes"), [(1.0, True), (2.0, True), (2.5, False)])
def test_chance_band_is_15_percent_relative(digits: Any, a: float, passes: bool) -> None:
    # Constant scores: a for class 0, 0 elsewhere. Oracle: L = ln(e^a + 9) - a * P(y = 0).
    y = digits[1]
    oracle = math.log(math.exp(a) + 9) - a * float((y == 0).double().mean())
    assert (abs(oracle - LN10) <= 0.15 * LN10) is passes  # the cases straddle the band
    scores = torch.zeros(1, 10)
    scores[0, 0] = a
    opts = SanityOptions(chance_examples=len(y))
    check = sanity_check(
        ConstantScores(scores), nn.CrossEntropyLoss(), digits, num_classes=10, options=opts
    )["chance_loss"]
    assert check.observed == pytest.approx(oracle, rel=1e-5)
    assert check.passed is passes
    assert check.details["band"] == pytest.approx([0.85 * LN10, 1.15 * LN10])


def test_multiclass_svm_chance_loss_is_0_9_in_mean_and_9_summed(digits: Any) -> None:
    # cs231n's SVM sums the margin-1 hinge over the 9 wrong classes: 9 at equal scores;
    # torch's MultiMarginLoss also divides by C: 0.9.
    mean = sanity_check(mlp(), nn.MultiMarginLoss(), digits, num_classes=10)
    assert mean["chance_loss"].expected == pytest.approx(0.9)
    assert mean.passed, str(mean)

    def summed(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.multi_margin_loss(out, y) * out.shape[1]

    total = sanity_check(mlp(), summed, digits, num_classes=10)["chance_loss"]
    assert total.expected == pytest.approx(9.0)
    assert total.passed


def test_nll_with_log_softmax_expects_ln10(digits: Any) -> None:
    model = nn.Sequential(mlp(), nn.LogSoftmax(dim=1))
    report = sanity_check(model, nn.NLLLoss(), digits, num_classes=10)
    assert report["chance_loss"].expected == pytest.approx(LN10, rel=1e-6)
    assert report["chance_loss"].details["reference"] == "log_probabilities"
    assert report.passed, str(report)


def test_nll_given_raw_scores_fails_chance_loss(digits: Any) -> None:
    # Zero scores would give NLL 0 = "chance" if the loss were not recognised as taking
    # log-probabilities; the uniform log-probabilities give ln 10 instead.
    check = sanity_check(mlp(), nn.NLLLoss(), digits, num_classes=10)["chance_loss"]
    assert check.expected == pytest.approx(LN10, rel=1e-6)
    assert abs(check.observed) < 0.1
    assert not check.passed
    assert "NLLLoss" in check.advice


def test_softmax_probability_outputs_expect_uniform_probabilities(digits: Any) -> None:
    def nll_of_probs(p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return -torch.log(p.gather(1, y[:, None])).mean()

    model = nn.Sequential(mlp(), nn.Softmax(dim=1))
    check = sanity_check(model, nll_of_probs, digits, num_classes=10)["chance_loss"]
    assert check.details["reference"] == "probabilities"
    assert check.expected == pytest.approx(LN10, rel=1e-6)
    assert check.passed


def test_caller_chance_loss_overrides_the_derived_one(digits: Any) -> None:
    report = sanity_check(mlp(), nn.CrossEntropyLoss(), digits, num_classes=10, chance_loss=1.0)
    check = report["chance_loss"]
    assert check.expected == 1.0
    assert check.details["reference"] == "given"
    assert not check.passed
    assert "below" not in check.advice and "too large" in check.advice


def test_reg_ladder_losses_are_data_loss_plus_l2(digits: Any) -> None:
    x, y = digits[0][:300], digits[1][:300]
    model = mlp()
    with torch.no_grad():
        data = F.cross_entropy(model(x), y).item()
        w2 = sum(float((p.double() ** 2).sum()) for p in model.parameters() if p.ndim >= 2)
    check = sanity_check(model, nn.CrossEntropyLoss(), (x, y), num_classes=10)["reg_raises_loss"]
    strengths = [0.0, 1e-3, 1e-1, 1.0, 10.0]
    assert check.expected["reg"] == strengths
    assert check.observed["loss"] == pytest.approx([data + s * w2 for s in strengths], rel=1e-5)
    assert check.passed and check.verdict == "ok"


def test_reg_fn_applied_to_nothing_fails(digits: Any) -> None:
    def nothing(model: nn.Module, strength: float) -> torch.Tensor:
        return torch.zeros(())

    report = sanity_check(mlp(), nn.CrossEntropyLoss(), digits, num_classes=10, reg_fn=nothing)
    check = report["reg_raises_loss"]
    assert not check.passed
    assert "applied to nothing" in check.advice


def test_reg_dominating_the_data_loss_warns(digits: Any) -> None:
    model = mlp()
    w2 = sum(float((p.detach() ** 2).sum()) for p in model.parameters() if p.ndim >= 2)
    big = 10.0 * LN10 / w2  # reg term ~10x the chance-level data loss
    report = sanity_check(model, nn.CrossEntropyLoss(), digits, num_classes=10, reg=big)
    check = report["reg_raises_loss"]
    assert check.passed and check.verdict == "warn"
    assert "overwhelm" in check.advice
    small = sanity_check(model, nn.CrossEntropyLoss(), digits, num_classes=10, reg=0.01 / w2)
    assert small["reg_raises_loss"].verdict == "ok"


def test_reg_term_without_gradient_warns(digits: Any) -> None:
    def as_number(model: nn.Module, strength: float) -> float:
        return l2_weights(model, strength).item()

    report = sanity_check(mlp(), nn.CrossEntropyLoss(), digits, num_classes=10, reg_fn=as_number)
    check = report["reg_raises_loss"]
    assert check.passed and check.verdict == "warn"
    assert "no gradient" in check.advice


def test_overfit_reports_the_fewest_steps_needed(digits: Any) -> None:
    check = sanity_check(mlp(), nn.CrossEntropyLoss(), digits, num_classes=10)["overfit_small"]
    steps = check.observed["steps"]
    assert check.passed and 1 <= steps <= 1000
    assert check.observed["loss"] < 0.01 and check.observed["train_acc"] == 1.0
    assert check.details["examples"] == 20
    short = SanityOptions(overfit_steps=steps - 1) if steps > 1 else None
    if short is not None:  # the same seeded run, one step short, does not get there
        again = sanity_check(mlp(), nn.CrossEntropyLoss(), digits, num_classes=10, options=short)
        assert not again["overfit_small"].passed


def _frozen_weights() -> nn.Module:
    model = mlp()
    for p in model.parameters():
        if p.ndim >= 2:
            p.requires_grad_(False)
    return model


def _negative_l2(model: nn.Module, strength: float) -> torch.Tensor:
    return -l2_weights(model, strength)


PLANTED: dict[str, tuple[Callable[[Any], dict[str, Any]], str, str]] = {
    # case: (kwargs builder, the one check that must fail, a word its advice must hold)
    "init_std_x10": (lambda d: {"model": mlp(10.0), "train": d}, "chance_loss", "init"),
    "negative_reg": (
        lambda d: {"model": mlp(), "train": d, "reg_fn": _negative_l2},
        "reg_raises_loss",
        "wrong sign",
    ),
    "frozen_weights": (
        lambda d: {"model": _frozen_weights(), "train": d},
        "overfit_small",
        "frozen",
    ),
    "detached_output": (
        lambda d: {"model": Detached(mlp()), "train": d},
        "overfit_small",
        "detached",
    ),
    "random_labels": (
        lambda d: {"model": mlp(), "train": DataLoader(RandomLabels(d[0]), batch_size=64)},
        "overfit_small",
        "labels",
    ),
}


@pytest.mark.parametrize("case", list(PLANTED))
def test_planted_bug_fails_exactly_its_check(digits: Any, case: str) -> None:
    build, check_name, word = PLANTED[case]
    kwargs = build(digits)
    report = sanity_check(
        kwargs.pop("model"), nn.CrossEntropyLoss(), kwargs.pop("train"), num_classes=10, **kwargs
    )
    assert failed(report) == {check_name}, str(report)
    assert word in report[check_name].advice
    assert not report.passed


def test_dataloader_of_a_dataset_passes(digits: Any) -> None:
    loader = DataLoader(TensorDataset(*digits), batch_size=64, shuffle=True)
    report = sanity_check(mlp(), nn.CrossEntropyLoss(), loader, num_classes=10)
    assert report.passed, str(report)
    assert report.info["examples_chance"] == 512 and report.info["examples_overfit"] == 20


def test_user_model_and_random_state_are_unchanged(digits: Any) -> None:
    model = mlp()
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    report = sanity_check(model, nn.CrossEntropyLoss(), digits, num_classes=10)
    assert report["overfit_small"].passed  # the copy did train
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not model.training
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(torch.get_rng_state(), rng)


def _bad_input(digits: Any, what: str) -> dict[str, Any]:
    x, y = digits
    cases: dict[str, dict[str, Any]] = {
        "label_too_big": {"train": (x, torch.where(y == 9, 10, y))},
        "negative_label": {"train": (x, torch.where(y == 0, -1, y))},
        "float_labels": {"train": (x, y.float())},
        "nan_input": {"train": (torch.where(y[:, None] == 3, math.nan, x), y)},
        "output_shape": {"model": mlp(out=9)},
        "loss_not_finite": {"loss_fn": lambda out, t: F.cross_entropy(out, t) / 0.0},
        "forward_fails": {"train": (x[:, :60], y)},
    }
    return cases[what]


@pytest.mark.parametrize(
    "what",
    [
        "label_too_big",
        "negative_label",
        "float_labels",
        "nan_input",
        "output_shape",
        "loss_not_finite",
        "forward_fails",
    ],
)
def test_bad_input_raises_before_any_check(digits: Any, what: str) -> None:
    args: dict[str, Any] = {"model": mlp(), "loss_fn": nn.CrossEntropyLoss(), "train": digits}
    args.update(_bad_input(digits, what))
    calls: list[int] = []
    args["loss_fn"] = _counting(args["loss_fn"], calls)
    with pytest.raises(SanityInputError) as err:
        sanity_check(args["model"], args["loss_fn"], args["train"], num_classes=10)
    assert isinstance(err.value, BabysitError) and isinstance(err.value, ValueError)
    message = str(err.value)
    assert "\n" not in message and "fix:" in message
    assert len(calls) <= 1  # at most the one probing call: no check ran


def _counting(fn: Callable[..., torch.Tensor], calls: list[int]) -> Callable[..., torch.Tensor]:
    def counted(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return fn(out, y)

    return counted


def test_num_classes_below_two_is_refused(digits: Any) -> None:
    with pytest.raises(SanityInputError, match="num_classes"):
        sanity_check(mlp(), nn.CrossEntropyLoss(), digits, num_classes=1)


def test_report_renders_a_table_and_json(digits: Any) -> None:
    report = sanity_check(mlp(10.0), nn.CrossEntropyLoss(), digits, num_classes=10)
    text = str(report)
    for word in ("check", "expected", "observed", "verdict", "advice", *CHECKS, "fail"):
        assert word in text
    assert text.rstrip().endswith("sanity checks FAILED")
    data = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert data["passed"] is False
    assert [c["name"] for c in data["checks"]] == list(CHECKS)
    assert data["checks"][0]["verdict"] == "fail"
    assert data["checks"][0]["observed"] == pytest.approx(report["chance_loss"].observed)


def test_sanity_task_builds_the_model_under_the_seed(digits: Any) -> None:
    def factory(cfg: dict[str, Any]) -> nn.Module:
        net = nn.Sequential(nn.Linear(64, cfg.get("hidden", 50)), nn.ReLU())
        last = nn.Linear(cfg.get("hidden", 50), 10)
        with torch.no_grad():
            last.weight.mul_(0.01)
        return nn.Sequential(net, last)

    task = Task(factory, train=digits, val=digits, loss_fn=nn.CrossEntropyLoss())
    first = sanity_task(task, {"hidden": 80}, seed=3)
    second = sanity_task(task, {"hidden": 80}, seed=3)
    assert first.passed, str(first)
    assert first.info["num_classes"] == 10  # the output width: the task gives none
    assert first.to_dict() == second.to_dict()
    other = sanity_task(task, {"hidden": 80}, seed=4)
    assert other["chance_loss"].observed != first["chance_loss"].observed


@pytest.mark.skipif(not hasattr(babysit.tasks, "get_task"), reason="bundled tasks not there")
@pytest.mark.parametrize("name", ["digits-softmax", "digits-mlp", "digits-convnet", "spiral-mlp"])
def test_bundled_task_passes_every_check(name: str) -> None:
    task = babysit.tasks.get_task(name)  # type: ignore[attr-defined]
    report = sanity_task(task, {})
    assert report.passed, str(report)
    if name.startswith("digits"):
        assert report["chance_loss"].expected == pytest.approx(LN10, rel=1e-3)
