"""Edge cases: each answered by one clear line (a DataError) or a sound report, never a raw
exception or a wrong verdict; NaN is never "ok"."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from babysit.checks.gradcheck.check import gradcheck, gradcheck_fn
from babysit.errors import DataError


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 4))


def data(n: int = 8) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 6, generator=g), torch.randint(0, 4, (n,), generator=g)


def test_nan_in_the_inputs_is_refused_up_front() -> None:
    x, y = data()
    x[5, 2] = float("nan")  # beyond the 4 checked datapoints too
    with pytest.raises(DataError, match="inputs hold 1 non-finite"):
        gradcheck(mlp(), F.cross_entropy, x, y)
    with pytest.raises(DataError, match="non-finite"):
        gradcheck_fn(lambda t: t.sum(), torch.tensor([1.0, float("inf")]))


def test_a_non_finite_gradient_fails_with_its_own_message() -> None:
    # Finite inputs, but sqrt's derivative at 0 is infinite: never "ok".
    report = gradcheck_fn(lambda t: t.abs().sqrt().sum(), torch.tensor([0.0, 1.0, 4.0]))
    row = report.params[0]
    assert not report.passed and row.verdict == "fail"
    assert row.advice.startswith("non-finite gradient: check inputs")

    class SqrtGate(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(6, 4)
            self.gate = nn.Parameter(torch.zeros(4))  # sqrt(0): an infinite derivative

        def forward(self, x: Tensor) -> Tensor:
            return self.fc(x) * (1 + self.gate.sqrt())

    report = gradcheck(SqrtGate(), F.cross_entropy, *data())
    assert not report.passed and report.row("gate").verdict == "fail"
    assert report.row("gate").advice.startswith("non-finite gradient: check inputs")
    assert report.row("fc.weight").verdict == "ok"


def test_batchnorm_in_train_mode_with_one_datapoint_is_one_clear_line() -> None:
    model = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.Linear(8, 4)).train()
    with pytest.raises(DataError, match=r"BatchNorm in train mode.*datapoints >= 2"):
        gradcheck(model, F.cross_entropy, *data(), datapoints=1)


class CastsToFloat32(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 4)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(x.float())  # float64 weights then meet float32 data


def test_a_model_that_computes_in_float32_is_checked_in_float32_and_says_so() -> None:
    report = gradcheck(CastsToFloat32(), F.cross_entropy, *data())
    assert report.passed and report.thresholds["dtype"] == "float32"
    assert "computes in float32 inside forward" in report.warnings[0]


def test_complex_inputs_and_parameters_are_refused() -> None:
    x, y = data()
    with pytest.raises(DataError, match="complex"):
        gradcheck(mlp(), F.cross_entropy, x.to(torch.complex64), y)
    model = mlp()
    model.register_parameter("c", nn.Parameter(torch.ones(2, dtype=torch.complex64)))
    with pytest.raises(DataError, match="parameter c is complex"):
        gradcheck(model, F.cross_entropy, x, y)


def test_an_empty_batch_is_refused() -> None:
    with pytest.raises(DataError, match="empty"):
        gradcheck(mlp(), F.cross_entropy, torch.zeros(0, 6), torch.zeros(0, dtype=torch.long))


@pytest.mark.parametrize("frozen", [True, False])
def test_no_trainable_parameter_is_one_clear_line(frozen: bool) -> None:
    model = mlp() if frozen else nn.Sequential(nn.Tanh(), nn.Flatten())
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(DataError, match=r"frozen|no parameters"):
        gradcheck(model, lambda o, y: F.cross_entropy(o[:, :4], y), *data())
    # wrt="inputs" still has something to check
    report = gradcheck(model, lambda o, y: F.cross_entropy(o[:, :4], y), *data(), wrt="inputs")
    assert report.passed


def test_a_python_float_loss_is_refused_and_a_one_element_loss_accepted() -> None:
    with pytest.raises(DataError, match="loss is a float"):
        gradcheck(mlp(), lambda o, y: float(F.cross_entropy(o, y).detach()), *data())
    report = gradcheck(mlp(), lambda o, y: F.cross_entropy(o, y).reshape(1), *data())
    assert report.passed and {p.verdict for p in report.params} == {"ok"}


def test_an_embedding_with_max_norm_writing_its_weight_is_refused() -> None:
    model = nn.Sequential(nn.Embedding(10, 4, max_norm=0.1), nn.Flatten(), nn.Linear(12, 3))
    idx, y = torch.randint(0, 10, (6, 3)), torch.randint(0, 3, (6,))
    with pytest.raises(DataError, match=r"wrote to 0\.weight in place"):
        gradcheck(model, F.cross_entropy, idx, y)


class Counter(nn.Module):
    """A buffer updated by every call that enters the output."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 4)
        self.register_buffer("calls", torch.zeros(()))

    def forward(self, x: Tensor) -> Tensor:
        self.calls += 1
        return self.fc(x) * (1 + 1e-3 * self.calls)


def test_a_forward_that_changes_state_is_refused() -> None:
    with pytest.raises(DataError, match="changed between calls"):
        gradcheck(Counter(), F.cross_entropy, *data())


def test_the_users_model_is_untouched_by_a_refusal() -> None:
    model = Counter()
    before: dict[str, Any] = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(DataError):
        gradcheck(model, F.cross_entropy, *data())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_loss_computed_in_float32_is_checked_in_float32_and_said_so() -> None:
    class LateCast(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(6, 4)

        def forward(self, x: Tensor) -> Tensor:
            return self.fc(x).float()  # float32 from here on: no dtype clash, coarser values

    report = gradcheck(LateCast(), F.cross_entropy, *data())
    assert report.passed and report.thresholds["dtype"] == "float32"
    assert "in float64: the loss comes out in float32" in report.warnings[0]
    fn = gradcheck_fn(lambda t: (t.exp() * 2).float().sum(), torch.randn(5, dtype=torch.float64))
    assert fn.passed and fn.thresholds["dtype"] == "float32"
