"""The loss at chance: one home for the sanity check and the trainer's monitor."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from babysit.checks.sanity.chance import CHANCE_REFERENCES, chance_loss, chance_value
from babysit.tasks import Task, get_task

LN10 = math.log(10)  # the notes: -ln(1/10) = 2.302 for 10-class softmax at chance


def _task(loss_fn: object, val: object = None, **kw: object) -> Task:
    g = torch.Generator().manual_seed(0)
    data = (torch.randn(300, 4, generator=g), torch.randint(0, 10, (300,), generator=g))
    return Task(
        lambda cfg: nn.Linear(4, 10),
        data,
        data if val is None else val,
        loss_fn,  # type: ignore[arg-type]
        num_classes=kw.pop("num_classes", 10),  # type: ignore[arg-type]
        **kw,  # type: ignore[arg-type]
    )


def test_the_trainer_gets_ln_c_for_cross_entropy_as_the_notes_say() -> None:
    assert chance_loss(get_task("digits-mlp")) == pytest.approx(LN10, rel=1e-6)  # 2.302


@pytest.mark.parametrize(
    ("loss_fn", "expected"),
    [
        (F.cross_entropy, LN10),
        (nn.NLLLoss(), LN10),  # log(1/C) everywhere, not zero scores (NLL 0)
        (nn.MultiMarginLoss(), 0.9),  # the margin-1 hinge at equal scores: (C-1)/C
    ],
)
def test_the_trainer_and_the_sanity_check_share_the_references(
    loss_fn: object, expected: float
) -> None:
    assert chance_loss(_task(loss_fn)) == pytest.approx(expected, rel=1e-6)


def test_the_task_override_wins_and_no_classes_gives_none() -> None:
    assert chance_loss(_task(F.cross_entropy, chance_loss=1.5)) == 1.5
    assert chance_loss(_task(F.cross_entropy, num_classes=None)) is None
    assert chance_loss(_task(lambda out, y: out.sum() / 0 * 0 + math.nan)) is None


def test_a_dataset_val_split_is_read_without_moving_the_random_streams() -> None:
    class Noisy(Dataset[tuple[torch.Tensor, torch.Tensor]]):
        def __len__(self) -> int:
            return 40

        def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
            return torch.rand(4), torch.tensor(i % 10)  # draws from torch's stream

    state = torch.get_rng_state()
    assert chance_loss(_task(F.cross_entropy, val=Noisy())) == pytest.approx(LN10, rel=1e-6)
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize("name", list(CHANCE_REFERENCES))
def test_every_reference_gives_outputs_of_the_same_shape_or_none(name: str) -> None:
    out = torch.log_softmax(torch.randn(6, 10), dim=1)
    for outputs in (out, out.exp(), torch.randn(6, 10)):
        ref = CHANCE_REFERENCES[name](outputs, F.cross_entropy, 10)
        assert ref is None or ref.shape == outputs.shape


def test_chance_value_picks_the_first_reference_that_applies() -> None:
    y = torch.arange(10)
    probs = torch.softmax(torch.randn(10, 10), dim=1)
    assert chance_value(probs, y, lambda p, t: -p.gather(1, t[:, None]).log().mean(), 10) == (
        pytest.approx(LN10),
        "probabilities",
    )
    assert chance_value(torch.randn(10, 10), y, F.cross_entropy, 10)[1] == "scores"
