"""Minibatches from tensors, Datasets and DataLoaders; evaluation; what the monitor is told."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from babysit.tasks import get_task
from babysit.training.batches import Batches, chance_loss, evaluate, image_shape


def _data(n: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 3, generator=g), torch.randint(0, 2, (n,), generator=g)


@pytest.mark.parametrize("kind", ["tensors", "dataset", "loader"])
def test_every_split_kind_yields_every_example_once(kind: str) -> None:
    x, y = _data()
    split = {
        "tensors": (x, y),
        "dataset": TensorDataset(x, y),
        "loader": DataLoader(TensorDataset(x, y), batch_size=16),
    }[kind]
    batches = Batches(split, 16, shuffle=True, generator=torch.Generator().manual_seed(1))
    seen = torch.cat([xb for xb, _ in batches])
    assert len(batches) == 4 and seen.shape == x.shape
    assert torch.equal(seen[seen[:, 0].argsort()], x[x[:, 0].argsort()])


def test_shuffle_order_follows_the_generator() -> None:
    x, y = _data()
    a = [
        yb for _, yb in Batches((x, y), 8, shuffle=True, generator=torch.Generator().manual_seed(3))
    ]
    b = [
        yb for _, yb in Batches((x, y), 8, shuffle=True, generator=torch.Generator().manual_seed(3))
    ]
    assert all(torch.equal(p, q) for p, q in zip(a, b, strict=True))


def test_evaluate_matches_a_direct_computation() -> None:
    x, y = _data()
    model = nn.Linear(3, 2)
    loss, acc = evaluate(model, Batches((x, y), 7, shuffle=False), nn.functional.cross_entropy)
    with torch.no_grad():
        out = model(x)
    assert loss == pytest.approx(float(nn.functional.cross_entropy(out, y)), rel=1e-6)
    assert acc == pytest.approx(float((out.argmax(1) == y).float().mean()))


def test_mismatched_split_is_an_error() -> None:
    with pytest.raises(ValueError, match="same first dimension"):
        Batches((torch.zeros(3, 2), torch.zeros(4)), 2, shuffle=False)


def test_monitor_hints_from_the_task() -> None:
    digits = get_task("digits-mlp")
    assert chance_loss(digits) == pytest.approx(math.log(10), rel=1e-6)  # the notes' 2.302
    assert image_shape(digits) == (8, 8)  # flat 64 features drawn as 8x8 filters
    assert image_shape(get_task("spiral-mlp")) is None
    assert image_shape(get_task("digits-convnet")) is None  # already images
