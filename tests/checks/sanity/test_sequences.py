"""Sanity checks on a language model: (N, T) targets, per-token chance loss and overfitting.

The setup that showed the problem: a tiny GPT-like model (nanoGPT's interface, wrapped to
return its logits) was refused for its (N, T) targets.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from babysit.checks.sanity.chance import chance_loss
from babysit.checks.sanity.check import (
    SanityInputError,
    SanityOptions,
    sanity_check,
    sanity_task,
)
from babysit.checks.sanity.reachable import reachable
from babysit.splits import draw

from ...sequence_models import VOCAB, LogitsOnly, TinyGPT, lm_loss, lm_pairs, lm_task

LN_V = math.log(VOCAB)  # the loss at chance per token: -ln(1/V)


def _gpt(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return LogitsOnly(TinyGPT())


def test_a_tiny_gpt_passes_with_ln_vocabulary_per_token() -> None:
    report = sanity_check(_gpt(), lm_loss, lm_pairs(256, seed=0), num_classes=VOCAB)
    assert report.passed, str(report)
    chance = report["chance_loss"]
    assert chance.expected == pytest.approx(LN_V, rel=1e-6)  # ln 11 = 2.398
    assert abs(chance.observed - LN_V) < 0.05 * LN_V  # small last layer: at chance
    overfit = report["overfit_small"]
    assert overfit.details["examples"] == SanityOptions().overfit_sequences == 4
    assert overfit.observed["train_acc"] == 1.0 and overfit.observed["loss"] < 0.01


def test_torchs_n_c_t_layout_is_checked_the_same_way() -> None:
    class ClassSecond(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lm = _gpt()

        def forward(self, idx: torch.Tensor) -> torch.Tensor:
            return self.lm(idx).transpose(1, 2)  # (N, C, T), what F.cross_entropy takes

    report = sanity_check(ClassSecond(), F.cross_entropy, lm_pairs(256, seed=0), num_classes=VOCAB)
    assert report.passed, str(report)
    assert report["chance_loss"].expected == pytest.approx(LN_V, rel=1e-6)


def test_sequences_that_start_alike_are_fitted_to_the_reachable_accuracy() -> None:
    # 20 sequences over 11 tokens: some share their first token and go on differently,
    # so no model gets every first target right (the notes' 100 % is out of reach)
    options = SanityOptions(overfit_sequences=20)
    train = lm_pairs(256, seed=0)
    report = sanity_check(_gpt(), lm_loss, train, num_classes=VOCAB, options=options)
    overfit = report["overfit_small"]
    x, y = draw(train, 20, seed=0, name="train", where="test").read()  # the check's subset
    reach = reachable(x, y, None)
    assert reach.ambiguous > 0 and reach.accuracy < 1
    assert overfit.expected["train_acc"] == reach.accuracy
    assert overfit.expected["loss_below"] == pytest.approx(0.01 + reach.loss)
    assert overfit.passed, str(report)
    assert overfit.observed["train_acc"] == pytest.approx(reach.accuracy)


def test_a_task_without_num_classes_reads_the_vocabulary_from_the_outputs() -> None:
    task = lm_task(n_train=64, n_val=16)
    task.num_classes = None
    report = sanity_task(task, {})
    assert report.info["num_classes"] == VOCAB


def test_the_trainers_chance_loss_is_ln_vocabulary_per_token() -> None:
    assert chance_loss(lm_task(n_train=64, n_val=16)) == pytest.approx(LN_V, rel=1e-6)


def test_padding_targets_are_not_labels() -> None:
    x, y = lm_pairs(256, seed=0)
    y[:, -2:] = -1  # padded ends, ignored by nanoGPT's loss
    report = sanity_check(_gpt(), lm_loss, (x, y), num_classes=VOCAB)
    assert report.passed, str(report)
    pad = torch.full_like(y, 0)
    pad[:, :-2] = y[:, :-2]  # padding id 0 is a class id: named by ignore_index
    report = sanity_check(
        _gpt(),
        lambda out, t: F.cross_entropy(out.flatten(0, 1), t.flatten(), ignore_index=0),
        (x, pad),
        num_classes=VOCAB,
        ignore_index=0,
    )
    assert report["overfit_small"].passed, str(report)


@pytest.mark.parametrize(
    ("case", "match"),
    [
        ("vocabulary", r"model output is \(.*, 10\), expected \(N, T, num_classes\)"),
        ("all_ignored", "every train target is ignored"),
        ("not_ignored", "give the loss that ignore_index"),
        ("beyond_vocabulary", r"labels span \[0, 11\], outside \[0, 11\)"),
    ],
)
def test_bad_sequence_input_is_one_clear_line(case: str, match: str) -> None:
    x, y = lm_pairs(64, seed=0)
    model, loss_fn = _gpt(), lm_loss
    if case == "vocabulary":
        model = nn.Sequential(nn.Embedding(VOCAB, 8), nn.Linear(8, 10))
    elif case == "all_ignored":
        y = torch.full_like(y, -1)
    elif case == "not_ignored":
        y[:, -1] = -100  # the loss ignores -1 only

        def loss_fn(out: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return F.cross_entropy(out.flatten(0, 1), t.flatten(), ignore_index=-1)

    else:
        y[0, 0] = VOCAB
    with pytest.raises(SanityInputError, match=match) as err:
        sanity_check(model, loss_fn, (x, y), num_classes=VOCAB)
    assert "\n" not in str(err.value) and "fix:" in str(err.value)
