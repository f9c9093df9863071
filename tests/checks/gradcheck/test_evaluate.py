"""The batched (vmap) evaluation against the plain loop it must reproduce; the noise probe."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from babysit.checks.gradcheck.check import gradcheck
from babysit.checks.gradcheck.evaluate import (
    Moves,
    Objective,
    estimate_noise,
    values,
    values_batched,
    values_plain,
    verify,
)
from babysit.checks.gradcheck.inputs import LossModule, params_objective
from babysit.errors import DataError
from babysit.tasks import l2_weights


def mlp_objective(batched: bool = True) -> Objective:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).double()
    x, y = torch.randn(4, 5, dtype=torch.float64), torch.tensor([0, 2, 1, 1])
    module = LossModule(model, F.cross_entropy, l2_weights, 1e-2, "total")
    return params_objective(module, x, y, seed=0, batched=batched)


def some_moves(leaf: Tensor) -> Moves:
    idx = torch.tensor([0, 1, leaf.numel() - 1])
    flat = leaf.detach().reshape(-1)[idx]
    step = torch.linspace(-1, 1, leaf.numel(), dtype=leaf.dtype).reshape(leaf.shape) * 1e-3
    other = torch.ones_like(step) * 1e-4
    along = [(0, 1.0), (0, -1.0), (1, 2.0)]
    return Moves(torch.cat([idx, idx]), torch.cat([flat + 1e-3, flat - 1e-3]), [step, other], along)


def test_batched_values_equal_the_plain_loop() -> None:
    obj = mlp_objective()
    for k, leaf in enumerate(obj.leaves):
        moves = some_moves(leaf)
        plain, batched = values_plain(obj, k, moves), values_batched(obj, k, moves)
        assert len(plain) == len(batched) == 9
        assert torch.allclose(torch.tensor(batched), torch.tensor(plain), rtol=1e-13, atol=0)
        # The perturbed values differ from the unperturbed loss: the moves took effect.
        assert len({round(v, 12) for v in plain}) > 1


def test_plain_loop_restores_every_leaf_exactly() -> None:
    obj = mlp_objective()
    before = [leaf.detach().clone() for leaf in obj.leaves]
    for k, leaf in enumerate(obj.leaves):
        values_plain(obj, k, some_moves(leaf))
    assert all(torch.equal(a, b.detach()) for a, b in zip(before, obj.leaves, strict=True))


class NoVmap(torch.autograd.Function):
    """An autograd.Function without a vmap rule: vmap refuses it."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        return x * 2

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> Tensor:
        return g * 2


def test_values_fall_back_to_the_loop_when_vmap_refuses() -> None:
    torch.manual_seed(0)
    w = torch.randn(6, dtype=torch.float64, requires_grad=True)
    obj = Objective(
        ["w"],
        [w],
        lambda: (NoVmap.apply(w) ** 2).sum(),
        lambda k, s: torch.vmap(lambda t: (NoVmap.apply(t) ** 2).sum())(s),
    )
    moves = some_moves(w)
    assert values(obj, 0, moves) == (values_plain(obj, 0, moves), False)
    assert obj.batch_failed == {0}


def test_verify_sends_a_leaf_the_batched_form_ignores_to_the_loop() -> None:
    obj = mlp_objective()
    base = obj.value()
    right = obj.batched
    obj.batched = lambda k, s: torch.full((s.shape[0],), base, dtype=torch.float64)
    moves = some_moves(obj.leaves[0])
    got, batched = values(obj, 0, moves)
    assert batched and not verify(obj, 0, moves.pick(0), got[0], base)
    assert values(obj, 0, moves) == (values_plain(obj, 0, moves), False)
    obj.batched = right  # the true batched form of leaf 1 is trusted once matched
    got, _ = values(obj, 1, some_moves(obj.leaves[1]))
    assert verify(obj, 1, some_moves(obj.leaves[1]).pick(0), got[0], base)
    assert obj.verified == {1}


def test_a_one_element_loss_is_accepted_and_a_python_float_refused() -> None:
    w = torch.randn(4, dtype=torch.float64, requires_grad=True)
    obj = Objective(["w"], [w], lambda: (w**2).sum().reshape(1))
    assert obj.value() == float((w**2).sum().detach())
    with pytest.raises(DataError, match="not a tensor"):
        Objective(["w"], [w], lambda: 1.0).value()  # type: ignore[arg-type,return-value]


def test_a_forward_that_writes_to_a_leaf_is_refused() -> None:
    emb = nn.Embedding(5, 3, max_norm=0.5).double()
    ids = torch.tensor([0, 1, 2])
    obj = Objective(["weight"], [emb.weight], lambda: emb(ids).sum())
    with pytest.raises(DataError, match="in place"):
        obj.gradients()


def test_batched_and_plain_checks_agree() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 4))
    x, y = torch.randn(8, 6), torch.randint(0, 4, (8,))
    fast = gradcheck(model, F.cross_entropy, x, y, reg=1e-3)
    slow = gradcheck(model, F.cross_entropy, x, y, reg=1e-3, batched=False)
    for a, b in zip(fast.params, slow.params, strict=True):
        assert (a.name, a.part, a.verdict, a.kinks) == (b.name, b.part, b.verdict, b.kinks)
        assert abs(a.max_rel_error - b.max_rel_error) < 1e-9


def test_estimate_noise_measures_a_known_noise_level() -> None:
    # sin(1e12 * ...) of points 1e-7 apart is as good as random: noise of std 1e-9 / sqrt(2).
    x = torch.linspace(0.5, 1.5, 6, dtype=torch.float64).requires_grad_(True)
    obj = Objective(["x"], [x], lambda: (x**2).sum() + 1e-9 * torch.sin(1e12 * x).sum())
    sigma = estimate_noise(obj, obj.value())
    assert 1e-9 / 4 < sigma < 1e-9 * 4
    quiet = Objective(["x"], [x], lambda: (x**2).sum())
    assert estimate_noise(quiet, quiet.value()) < 1e-14


def test_estimate_noise_is_not_fooled_by_a_kink_at_the_point() -> None:
    # Ties at x (relu inputs of exactly 0): every direction crosses them. Unrecorded, the
    # kink's jump would read as noise of order delta * |x|; on one side of x it is no noise.
    x = torch.tensor([0.0, 0.0, 0.0, 1.5, -2.0], dtype=torch.float64, requires_grad=True)
    w = torch.tensor([1.0, -3.0, 2.0, 0.5, 1.0], dtype=torch.float64)
    obj = Objective(["x"], [x], lambda: (torch.relu(x) * w).sum())
    assert estimate_noise(obj, obj.value()) < 1e-15


def test_a_model_trained_to_a_tiny_loss_still_checks_ok() -> None:
    # The loss is then a small difference of large logits: its round-off is far above
    # eps * |loss|, which the measured noise accounts for.
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 4)
    )
    x, y = torch.randn(8, 6), torch.randint(0, 4, (8,))
    report = gradcheck(model, F.cross_entropy, x, y, burn_in_steps=300, burn_in_lr=3e-2)
    (note,) = [w for w in report.warnings if w.startswith("burn-in")]
    assert float(note.split(" -> ")[1]) < 1e-3
    assert all(p.verdict == "ok" for p in report.params)
