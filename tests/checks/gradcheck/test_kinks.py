"""Kinks: the recorder sees plain user code take another branch; a correct gradient at a kink
never fails (naive centered differences do); a wrong one still does; no false alarms."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from babysit.checks.gradcheck.check import gradcheck, gradcheck_fn, numerical_gradient, rel_error
from babysit.checks.gradcheck.kinks import KinkRecorder, compare, crossed


def decisions(f: Callable[[Tensor], Any], x: list[float]) -> Any:
    with torch.no_grad(), KinkRecorder() as rec:
        f(torch.tensor(x, dtype=torch.float64))
    return rec.decisions


def _pool(t: Tensor) -> Tensor:
    return nn.MaxPool2d(2)(t.view(1, 1, 2, 2))


def _svm(t: Tensor) -> Tensor:
    return nn.MultiMarginLoss()(t.view(1, 3), torch.tensor([0]))


# (op, f, a, b, c): a and b lie on both sides of a kink of f; a and c on the same side.
CASES = [
    ("relu", F.relu, [0.5, -1e-3], [0.5, 1e-3], [0.7, -2e-3]),
    ("relu_", lambda t: nn.ReLU(inplace=True)(t.clone()), [-1e-3], [1e-3], [-5.0]),
    ("leaky_relu", F.leaky_relu, [-1e-3], [1e-3], [-2.0]),
    ("elu", F.elu, [-1e-3], [1e-3], [-2.0]),
    ("abs", torch.abs, [1.0, -1e-3], [1.0, 1e-3], [2.0, -1.0]),
    ("clamp hinge", lambda t: (1 - t).clamp(min=0), [1 + 1e-3], [1 - 1e-3], [3.0]),
    ("clamp", lambda t: t.clamp(-1, 1), [1 - 1e-3], [1 + 1e-3], [0.0]),
    ("hardtanh", F.hardtanh, [-1 - 1e-3], [-1 + 1e-3], [-5.0]),
    ("relu6", F.relu6, [6 - 1e-3], [6 + 1e-3], [1.0]),
    ("max", torch.max, [1.0, 1 + 1e-3], [1.0, 1 - 1e-3], [1.0, 2.0]),
    (
        "max dim",
        lambda t: t.view(2, 2).max(1),
        [1, 2, 3 + 1e-3, 3],
        [1, 2, 3 - 1e-3, 3],
        [1, 2, 5, 3],
    ),
    ("maximum", lambda t: torch.maximum(t, torch.zeros_like(t)), [-1e-3], [1e-3], [-1.0]),
    ("amax", lambda t: t.amax(0), [1.0, 1 + 1e-3], [1.0, 1 - 1e-3], [0.0, 2.0]),
    ("max_pool2d", _pool, [1, 2, 2 + 1e-3, 0], [1, 2, 2 - 1e-3, 0], [1, 2, 4, 0]),
    ("multi_margin_loss", _svm, [1.0, 1e-3, -5], [1.0, -1e-3, -5], [1.0, 0.5, -5]),
    ("sort", lambda t: t.sort(), [1.0, 1 + 1e-3], [1.0, 1 - 1e-3], [1.0, 3.0]),
    ("topk", lambda t: t.topk(1), [1.0, 1 + 1e-3, 0], [1.0, 1 - 1e-3, 0], [1.0, 3.0, 0]),
    ("argmax", lambda t: t.argmax(), [1.0, 1 + 1e-3], [1.0, 1 - 1e-3], [1.0, 3.0]),
    ("where", lambda t: torch.where(t > 0, t, 0.1 * t), [-1e-3], [1e-3], [-1.0]),
    ("cdist p=1", lambda t: torch.cdist(t.view(1, 2), torch.ones_like(t.view(1, 2)), p=1),
     [1.0, 1 - 1e-3], [1.0, 1 + 1e-3], [1.0, 0.0]),
    ("multilabel_margin_loss", lambda t: F.multilabel_margin_loss(t.view(1, 3),
     torch.tensor([[0, -1, 0]])), [1.0, 1e-3, -5], [1.0, -1e-3, -5], [1.0, 0.5, -5]),
]  # fmt: skip


@pytest.mark.parametrize(("op", "f", "a", "b", "c"), CASES, ids=[c[0] for c in CASES])
def test_recorder_sees_the_branch_change_of_plain_code(
    op: str, f: Callable[[Tensor], Any], a: list[float], b: list[float], c: list[float]
) -> None:
    da, db, dc = decisions(f, a), decisions(f, b), decisions(f, c)
    assert da, f"{op}: nothing recorded"
    assert crossed(da, db)
    assert not crossed(da, dc)


def ties(f: Callable[[Tensor], Any], x: Tensor) -> dict[str, Tensor | None]:
    with torch.no_grad(), KinkRecorder(ties=True) as rec:
        f(x)
    return {name: tie for name, _, tie in rec.decisions}


def test_ties_mark_entries_exactly_at_their_kink() -> None:
    x = torch.tensor([0.0, 1.0, -2.0, 0.0], dtype=torch.float64)
    assert ties(F.relu, x)["relu"].tolist() == [True, False, False, True]  # type: ignore[union-attr]
    assert ties(lambda t: t.clamp(-2, 1), x)["clamp"].tolist() == [False, True, True, False]  # type: ignore[union-attr]
    both = ties(lambda t: torch.maximum(t, torch.zeros_like(t)), x)["maximum"]
    assert both is not None and both.tolist() == [True, False, False, True]
    rows = ties(lambda t: t.view(2, 2).max(1), torch.tensor([3.0, 3.0, 1.0, 2.0]))["max"]
    assert rows is not None and rows.tolist() == [True, False]
    ranked = ties(lambda t: t.sort(), torch.tensor([2.0, 5.0, 2.0, 1.0]))["sort"]
    assert ranked is not None and ranked.tolist() == [False, True, True, False]  # sorted order


@pytest.mark.parametrize("padding", [0, 1])
def test_max_pool_ties_are_windows_won_twice(padding: int) -> None:
    x = torch.tensor([[1.0, 1.0, 0.0, 5.0], [0.0, 0.0, 2.0, 3.0],
                      [4.0, 0.0, 7.0, 7.0], [0.0, 0.0, 0.0, 7.0]]).view(1, 1, 4, 4)  # fmt: skip
    pool = nn.MaxPool2d(2, padding=padding)
    tie = ties(pool, x)["max_pool2d_with_indices"]
    assert tie is not None
    # Brute force: each window's maximum counted in the window, padding never counting.
    padded = F.pad(x, (padding,) * 4, value=-torch.inf)[0, 0]
    out = pool(x)[0, 0]
    want = [[int((padded[2 * i : 2 * i + 2, 2 * j : 2 * j + 2] == out[i, j]).sum()) > 1
             for j in range(out.shape[1])] for i in range(out.shape[0])]  # fmt: skip
    assert tie[0, 0].tolist() == want and any(map(any, want))
    # 1-d pooling runs as 2-d on a height of 1 on this backend; either way the tie is seen
    seen = ties(nn.MaxPool1d(2), torch.tensor([[[1.0, 1.0, 0.0, 2.0]]]))
    (flat,) = (t for name, t in seen.items() if name.startswith("max_pool"))
    assert flat is not None and flat.reshape(-1).tolist() == [True, False]


def test_compare_tells_ties_at_the_point_from_kinks_nearby() -> None:
    x = torch.tensor([0.0, 1e-3, -1.0], dtype=torch.float64)
    with KinkRecorder(ties=True) as rec:
        F.relu(x)
    base = rec.decisions
    for moved, want in (([1e-9, 1e-3, -1.0], "ties"), ([0.0, -1e-3, -1.0], "other"),
                        ([0.0, 2e-3, -0.5], "same"), ([1e-9, -1e-3, -1.0], "other")):  # fmt: skip
        with KinkRecorder() as rec:
            F.relu(torch.tensor(moved, dtype=torch.float64))
        assert compare(rec.decisions, base) == want


def test_where_on_a_recorded_comparison_adds_nothing() -> None:
    got = decisions(lambda t: torch.where(t > 0, t, 0.1 * t), [1.0, -1.0])
    assert [name for name, _, _ in got] == ["gt"]


def test_recorder_ignores_smooth_code() -> None:
    assert decisions(lambda t: (t.tanh() @ t.exp()).log_softmax(0), [0.1, -0.2]) == []


def naive_error(model: nn.Module, loss: Any, x: Tensor, y: Tensor, name: str, i: Any) -> float:
    """The plain check the notes warn about: centered difference vs autograd, one coordinate."""
    p = dict(model.named_parameters())[name]
    analytic = torch.autograd.grad(loss(model(x), y), p)[0][i]

    def f(t: Tensor) -> Tensor:
        with torch.no_grad():
            old = p.detach().clone()
            p.copy_(t)
            value = loss(model(x), y)
            p.copy_(old)
        return value

    return rel_error(analytic, numerical_gradient(f, p.detach().clone())[i])


def mlp(act: type[nn.Module]) -> nn.Sequential:
    return nn.Sequential(nn.Linear(6, 16), act(), nn.Linear(16, 16), act(), nn.Linear(16, 4))


class PoolNet(nn.Module):
    """Linear -> 4x4 map -> 2x2 max-pool -> linear."""

    def __init__(self) -> None:
        super().__init__()
        self.fc, self.pool, self.out = nn.Linear(6, 16), nn.MaxPool2d(2), nn.Linear(4, 4)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.pool(self.fc(x).view(-1, 1, 4, 4)).flatten(1))


def hinge(scores: Tensor, y: Tensor) -> Tensor:
    """The SVM loss written with clamp: sum over j != y of max(0, s_j - s_y + 1)."""
    margins = (scores - scores.gather(1, y[:, None]) + 1).clamp(min=0)
    return (margins.sum(1) - 1).mean()


def relu_at_kink() -> tuple[nn.Module, Any, str, Any]:
    model = mlp(nn.ReLU)
    with torch.no_grad():  # unit 3 of the first layer sits 1e-8 above its kink on sample 0
        first = model[0]
        assert isinstance(first, nn.Linear)
        first.bias[3] -= first(X[:1])[0, 3] - 1e-8
    return model, F.cross_entropy, "0.bias", 3


def pool_at_kink() -> tuple[nn.Module, Any, str, Any]:
    model = PoolNet()
    with torch.no_grad():  # the winner of sample 0's first window leads by 1e-8
        o = model.fc(X[:1])[0]
        window = [0, 1, 4, 5]
        first = window[int(o[window].argmax())]
        second = next(i for i in window if i != first)
        model.fc.bias[second] += o[first] - o[second] - 1e-8
    return model, F.cross_entropy, "fc.bias", first


def margin_at_kink(loss: Any) -> Callable[[], tuple[nn.Module, Any, str, Any]]:
    def make() -> tuple[nn.Module, Any, str, Any]:
        model = nn.Linear(6, 4)
        with torch.no_grad():  # one margin of sample 0 is 1e-8 above zero
            s, yi = model(X[:1])[0], int(Y[0])
            j = (yi + 1) % 4
            model.bias[j] += s[yi] - s[j] - 1 + 1e-8
        return model, loss, "bias", j

    return make


X = torch.randn(4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
Y = torch.tensor([0, 2, 1, 3])
PLACED = {
    "relu": relu_at_kink,
    "max_pool2d_with_indices": pool_at_kink,
    "multi_margin_loss": margin_at_kink(nn.MultiMarginLoss()),
    "clamp": margin_at_kink(hinge),
}


@pytest.mark.parametrize("op", sorted(PLACED))
def test_a_unit_within_1e_8_of_its_kink_fails_a_naive_check_but_not_babysit(op: str) -> None:
    naive_failures = 0
    for seed in range(20):
        torch.manual_seed(seed)
        torch.set_default_dtype(torch.float64)
        try:
            model, loss, name, i = PLACED[op]()
        finally:
            torch.set_default_dtype(torch.float32)
        naive_failures += naive_error(model, loss, X, Y, name, i) > 1e-2
        report = gradcheck(model, loss, X, Y, seed=seed)
        assert report.passed and report.row(name).verdict in ("ok", "inconclusive"), f"{seed}"
        assert op in report.thresholds["kink_ops"]
        # Every coordinate of the tensor, the placed one included: crossed, resolved, ok.
        p = model.get_parameter(name)

        def f(t: Tensor, model: nn.Module = model, loss: Any = loss, name: str = name) -> Tensor:
            return loss(functional_call(model, {name: t}, (X,)), Y)

        row = gradcheck_fn(f, p.detach(), seed=seed).params[0]
        assert row.verdict == "ok" and row.kinks >= 1, f"seed {seed}: {row}"
    assert naive_failures >= 15  # the premise: there, a naive check fails


class NumpyReLU(torch.autograd.Function):
    """relu computed in numpy: its branch is hidden from the dispatch mode."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return torch.from_numpy(np.maximum(x.detach().numpy(), 0.0))

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        return g * (x > 0).to(g.dtype)


def test_a_hidden_kink_is_found_from_the_one_sided_differences() -> None:
    w = torch.linspace(0.5, 2.0, 4, dtype=torch.float64)
    x = torch.tensor([1e-8, -1e-8, 0.7, -0.3], dtype=torch.float64)

    def f(t: Tensor) -> Tensor:
        return (NumpyReLU.apply(t) * w).sum()

    with KinkRecorder() as rec:
        f(x)
    assert not [d for d in rec.decisions if d[0] != "gt"]  # nothing but the backward's compare
    assert rel_error(numerical_gradient(f, x)[:2], (x[:2] > 0) * w[:2]) > 1e-2
    row = gradcheck_fn(f, x, batched=False).params[0]
    assert row.kinks >= 2 and row.verdict != "fail"


class TripledReLU(torch.autograd.Function):
    """relu whose backward is 3x too large."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        return 3 * g * (x > 0).to(g.dtype)


def test_at_kinks_a_right_gradient_is_never_a_failure_and_a_wrong_one_is() -> None:
    x = torch.tensor([1e-8, -1e-8, 2e-8, -3e-9, 5e-9], dtype=torch.float64)
    w = torch.linspace(0.5, 2.0, 5, dtype=torch.float64)
    right = gradcheck_fn(lambda t: (F.relu(t) * w).sum(), x).params[0]
    wrong = gradcheck_fn(lambda t: (TripledReLU.apply(t) * w).sum(), x).params[0]
    # Every probe crosses a kink at h = 1e-5; closer than the nearest kink (1e-9 and less)
    # the loss is smooth, and there the right gradient matches and the wrong one does not.
    assert right.kinks == right.checked and right.verdict == "ok"
    assert right.worst["note"].startswith("no kink within")
    assert wrong.kinks >= 1 and wrong.verdict == "fail"


def test_kinks_meeting_exactly_at_the_point_are_inconclusive_never_failed() -> None:
    # relu(x) - 3 relu(-x) at x = 0: one-sided slopes 1 (right) and 3 (left); the chain rule
    # gives 0 (relu'(0) = 0), outside them. No step avoids a kink at x: neither right nor wrong.
    x = torch.zeros(6, dtype=torch.float64)
    report = gradcheck_fn(lambda t: (F.relu(t) - 3 * F.relu(-t)).sum(), x)
    row = report.params[0]
    assert row.verdict == "inconclusive" and report.passed
    assert row.worst["one_sided"] == pytest.approx([3.0, 1.0]) and "exactly at" in row.advice
    assert report.thresholds["ties"] == {"relu": 12}


def convnet() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 3, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(27, 4)
    )


NO_FALSE_ALARMS = {
    "tanh-mlp": (lambda: mlp(nn.Tanh), F.cross_entropy, (6,)),
    "relu-mlp": (lambda: mlp(nn.ReLU), F.cross_entropy, (6,)),
    "relu-maxpool-convnet": (convnet, F.cross_entropy, (1, 8, 8)),
    "multimargin-svm": (lambda: nn.Linear(6, 4), nn.MultiMarginLoss(), (6,)),
    "clamp-hinge-mlp": (lambda: mlp(nn.ReLU), hinge, (6,)),
}


@pytest.mark.parametrize("case", sorted(NO_FALSE_ALARMS))
def test_correct_models_over_50_seeds_never_fail(case: str) -> None:
    make, loss, shape = NO_FALSE_ALARMS[case]
    for seed in range(50):
        torch.manual_seed(seed)
        x, y = torch.randn(8, *shape), torch.randint(0, 4, (8,))
        report = gradcheck(make(), loss, x, y, seed=seed)
        assert report.passed, f"{case} seed {seed}:\n{report}"
        if case == "tanh-mlp":
            assert all(p.verdict == "ok" and p.kinks == 0 for p in report.params)
