"""Planted bugs: each wrong backward is reported "fail" on exactly its tensor, "ok" elsewhere."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from babysit.checks.gradcheck.check import gradcheck, gradcheck_fn
from babysit.tasks import l2_weights


class PlantedLinear(torch.autograd.Function):
    """y = x W^T + b with a backward that can be wrong in one planted way."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, w: Tensor, b: Tensor, bug: str) -> Tensor:
        ctx.save_for_backward(x, w)
        ctx.bug = bug
        return x @ w.T + b

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor | None, ...]:
        x, w = ctx.saved_tensors
        gx, gw = g @ w, g.T @ x  # the right gradients
        gb: Tensor | None = g.sum(0)
        if ctx.bug == "forgets_bias":
            gb = None
        elif ctx.bug == "transposed":
            gw = gw.T
        elif ctx.bug == "doubled":
            gw = 2 * gw
        elif ctx.bug == "one_row":
            gw = gw.clone()
            gw[3] = -gw[3]
        elif ctx.bug == "input":
            gx = 0.5 * gx
        return gx, gw, gb, None


class Planted(nn.Module):
    def __init__(self, n: int, bug: str) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n, n) / n**0.5)
        self.bias = nn.Parameter(0.1 * torch.randn(n))
        self.bug = bug

    def forward(self, x: Tensor) -> Tensor:
        return PlantedLinear.apply(x, self.weight, self.bias, self.bug)


def planted_mlp(bug: str) -> nn.Sequential:
    # The square planted layer sits in the middle: upstream tensors still get a right gradient.
    return nn.Sequential(nn.Linear(6, 12), nn.Tanh(), Planted(12, bug), nn.Tanh(), nn.Linear(12, 4))


def data(n: int = 8, seed: int = 0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 6, generator=g), torch.randint(0, 4, (n,), generator=g)


def verdicts(report: Any, part: str = "total") -> dict[str, str]:
    """Per-tensor verdicts (the whole batch's row aside)."""
    return {p.name: p.verdict for p in report.params if p.part == part and p.name != "whole batch"}


@pytest.mark.parametrize(
    ("bug", "tensor"),
    [
        ("forgets_bias", "2.bias"),
        ("transposed", "2.weight"),
        ("doubled", "2.weight"),
        ("one_row", "2.weight"),
    ],
)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_planted_linear_bug_fails_exactly_its_tensor(bug: str, tensor: str, seed: int) -> None:
    torch.manual_seed(seed)
    report = gradcheck(planted_mlp(bug), F.cross_entropy, *data(seed=seed), seed=seed)
    got = verdicts(report)
    assert got.pop(tensor) == "fail"
    assert set(got.values()) == {"ok"}
    assert not report.passed and report.failures[0].advice


def test_a_wrong_row_outside_the_sampled_coordinates_is_caught_by_the_direction() -> None:
    torch.manual_seed(0)
    report = gradcheck(planted_mlp("one_row"), F.cross_entropy, *data(), coords_per_param=1)
    row = report.row("2.weight")
    # The directions fail; then one coordinate (not in row 3) is checked to say where: only
    # the random directions see the bug.
    assert (row.verdict, row.checked) == ("fail", 3)
    assert row.worst["index"] in ("direction", "small entries")


def test_wrong_input_gradient_fails_the_inputs_and_what_is_upstream() -> None:
    torch.manual_seed(0)
    model = planted_mlp("input")
    assert verdicts(gradcheck(model, F.cross_entropy, *data(), wrt="inputs")) == {"inputs": "fail"}
    got = verdicts(gradcheck(model, F.cross_entropy, *data()))
    assert got == {k: "fail" if k.startswith("0.") else "ok" for k in got}


class WrongSquare(torch.autograd.Function):
    """sum(w**2) whose backward forgets the factor 2."""

    @staticmethod
    def forward(ctx: Any, w: Tensor) -> Tensor:
        ctx.save_for_backward(w)
        return (w**2).sum()

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> Tensor:
        (w,) = ctx.saved_tensors
        return g * w


def test_wrong_reg_fn_is_attributed_to_the_reg_part() -> None:
    def reg_fn(model: nn.Module, strength: float) -> Tensor:
        # The right L2 on every weight, plus the planted wrong one on the first layer.
        first = model.get_parameter("0.weight")
        return (
            l2_weights(model, strength)
            - strength * (first**2).sum()
            + strength * (WrongSquare.apply(first))
        )

    torch.manual_seed(0)
    report = gradcheck(planted_mlp("none"), F.cross_entropy, *data(), reg=1e-1, reg_fn=reg_fn)
    assert set(verdicts(report, "data").values()) == {"ok"}
    reg = verdicts(report, "reg")
    assert reg.pop("0.weight") == "fail" and set(reg.values()) == {"ok"}
    total = verdicts(report, "total")
    assert total.pop("0.weight") == "fail" and set(total.values()) == {"ok"}
    assert "reg_fn" in report.row("0.weight", part="reg").advice


class WrongSoftmax(torch.autograd.Function):
    """softmax whose backward forgets the -y (y . g) term: dx = y * g."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        y = x.softmax(-1)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> Tensor:
        (y,) = ctx.saved_tensors
        return y * g


class Attention(nn.Module):
    """scores = x Wq^T -> softmax (planted) -> linear: only Wq is upstream of the softmax."""

    def __init__(self) -> None:
        super().__init__()
        self.query = nn.Linear(6, 8, bias=False)
        self.out = nn.Linear(8, 4)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(WrongSoftmax.apply(self.query(x)))


def test_wrong_softmax_backward_fails_the_tensor_upstream_of_it() -> None:
    torch.manual_seed(0)
    got = verdicts(gradcheck(Attention(), F.cross_entropy, *data()))
    assert got == {"query.weight": "fail", "out.weight": "ok", "out.bias": "ok"}


def test_wrong_softmax_backward_fails_gradcheck_fn() -> None:
    weights = torch.linspace(-1, 2, 5, dtype=torch.float64)
    x = torch.randn(3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    right = gradcheck_fn(lambda t: (t.softmax(-1) * weights).sum(), x)
    wrong = gradcheck_fn(lambda t: (WrongSoftmax.apply(t) * weights).sum(), x)
    assert right.passed and right.params[0].verdict == "ok"
    assert not wrong.passed and wrong.params[0].verdict == "fail"


# --- bugs confined to small entries, judged against torch.autograd.gradcheck (slow, float64) --


class SmallEntryLinear(torch.autograd.Function):
    """y = x W^T + b whose weight gradient is wrong only where it is small, or in one column."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, w: Tensor, b: Tensor, bug: str) -> Tensor:
        ctx.save_for_backward(x, w)
        ctx.bug = bug
        return x @ w.T + b

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor | None, ...]:
        x, w = ctx.saved_tensors
        gw = g.T @ x
        small = gw.abs() < 1e-2 * gw.abs().max()  # below 1 % of the largest entry
        factor = {"zeroed": 0.0, "sign_flipped": -1.0, "x1.5": 1.5}.get(ctx.bug, 1.0)
        if ctx.bug == "column":  # the column of input feature 0 (scaled by 0.01): x1.5
            gw = gw.clone()
            gw[:, 0] *= 1.5
        else:
            gw = torch.where(small, factor * gw, gw)
        return g @ w, gw, g.sum(0), None


class GeluMissingTerm(torch.autograd.Function):
    """GELU whose backward drops part of the x * pdf(x) term (relative 1e-3 x^2)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return F.gelu(x)

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        cdf = 0.5 * (1 + torch.erf(x / 2**0.5))
        pdf = torch.exp(-0.5 * x * x) / (2 * torch.pi) ** 0.5
        return g * (cdf + x * pdf * (1 - 1e-3 * x * x))


class SmallEntryNet(nn.Module):
    """Planted layer first (its input feature 0 is scaled by 0.01), GELU, tanh, linear."""

    def __init__(self, bug: str) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(12, 6) / 6**0.5)
        self.bias = nn.Parameter(0.1 * torch.randn(12))
        self.hidden, self.out = nn.Linear(12, 12), nn.Linear(12, 4)
        self.bug = bug

    def forward(self, x: Tensor) -> Tensor:
        h = SmallEntryLinear.apply(x, self.weight, self.bias, self.bug)
        h = GeluMissingTerm.apply(h) if self.bug == "gelu" else F.gelu(h)
        return self.out(torch.tanh(self.hidden(h)))


def scaled_data(seed: int) -> tuple[Tensor, Tensor]:
    x, y = data(seed=seed)
    x[:, 0] *= 0.01
    return x, y


def torch_slow_catches(model: nn.Module, x: Tensor, y: Tensor) -> bool:
    """The oracle: torch.autograd.gradcheck in slow mode, float64, on every parameter."""
    model = copy.deepcopy(model).double()
    names = [n for n, _ in model.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_(True) for p in model.parameters())

    def loss(*ps: Tensor) -> Tensor:
        return F.cross_entropy(
            functional_call(model, dict(zip(names, ps, strict=True)), (x.double(),)), y
        )

    return not torch.autograd.gradcheck(loss, params, raise_exception=False)


SMALL_BUGS = ["zeroed", "sign_flipped", "x1.5", "column", "gelu"]


@pytest.mark.parametrize("bug", SMALL_BUGS)
def test_every_bug_torch_slow_mode_catches_is_a_fail(bug: str) -> None:
    caught = 0
    for seed in range(5):
        torch.manual_seed(seed)
        model, (x, y) = SmallEntryNet(bug), scaled_data(seed)
        report = gradcheck(model, F.cross_entropy, x, y, seed=seed, datapoints=8)
        if torch_slow_catches(model, x, y):
            caught += 1
            assert not report.passed, f"seed {seed}: torch fails it, babysit says\n{report}"
            assert report.row("weight" if bug != "gelu" else "bias").verdict == "fail"
        # A tensor the bug does not reach stays ok (the planted layer is the first one).
        assert report.row("out.weight").verdict == "ok"
    assert caught >= 1  # the premise: torch's slow mode sees these bugs (the GELU one rarely)


def test_no_false_alarms_on_the_same_net_without_a_bug() -> None:
    for seed in range(10):
        torch.manual_seed(seed)
        model, (x, y) = SmallEntryNet("none"), scaled_data(seed)
        assert not torch_slow_catches(model, x, y)
        report = gradcheck(model, F.cross_entropy, x, y, seed=seed)
        assert report.passed and {p.verdict for p in report.params} == {"ok"}, str(report)
