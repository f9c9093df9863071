"""Prediction: averages against hand computations, the vmapped pass against one by one."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from babysit.ensembles.predict import (
    AVERAGES,
    Predictor,
    average,
    collect,
    scores,
    soft_targets,
)
from babysit.errors import ConfigError

# 3 members, 2 examples, 3 classes
Z = torch.tensor(
    [
        [[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]],
        [[0.0, 1.0, 0.0], [-1.0, 2.0, 1.0]],
        [[1.0, 1.0, 3.0], [0.0, 0.0, 0.0]],
    ],
    dtype=torch.float64,
)


def _softmax(row: list[float]) -> list[float]:
    e = [math.exp(v) for v in row]
    return [v / sum(e) for v in e]


def test_probability_average_is_the_mean_of_the_members_softmax() -> None:
    hand = [
        [sum(_softmax(Z[m, n].tolist())[c] for m in range(3)) / 3 for c in range(3)]
        for n in range(2)
    ]
    got = average(Z, "probs").exp()
    assert torch.allclose(got, torch.tensor(hand, dtype=torch.float64), atol=1e-12)


def test_logit_average_is_the_mean_score_vector() -> None:
    hand = [[sum(Z[m, n, c].item() for m in range(3)) / 3 for c in range(3)] for n in range(2)]
    assert torch.allclose(average(Z, "logits"), torch.tensor(hand, dtype=torch.float64))


def test_cross_entropy_of_the_averaged_probabilities_is_minus_log_p_of_the_label() -> None:
    y = torch.tensor([2, 1])
    p = [
        [sum(_softmax(Z[m, n].tolist())[c] for m in range(3)) / 3 for c in range(3)]
        for n in range(2)
    ]
    hand_loss = -(math.log(p[0][2]) + math.log(p[1][1])) / 2
    hand_acc = sum(max(range(3), key=lambda c, n=n: p[n][c]) == y[n].item() for n in range(2)) / 2
    got = scores(average(Z, "probs"), y, F.cross_entropy)
    assert got["loss"] == pytest.approx(hand_loss, abs=1e-12)
    assert got["acc"] == hand_acc


def test_soft_targets_are_the_mean_of_the_softened_member_distributions() -> None:
    t = 4.0
    hand = [
        [
            sum(_softmax([v / t for v in Z[m, n].tolist()])[c] for m in range(3)) / 3
            for c in range(3)
        ]
        for n in range(2)
    ]
    got = soft_targets(Z, "probs", t).exp()
    assert torch.allclose(got, torch.tensor(hand, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(soft_targets(Z, "logits", t), F.log_softmax(Z.mean(0) / t, -1))


def test_an_unknown_average_is_a_config_error() -> None:
    assert list(AVERAGES) == ["probs", "logits"]
    with pytest.raises(ConfigError, match=r"unknown average 'prob'; did you mean 'probs'"):
        average(Z, "prob")


def _mlp(hidden: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, hidden), nn.Tanh(), nn.Linear(hidden, 4)).double()


class _Branchy(nn.Module):
    """Control flow that depends on the weights: vmap cannot batch it over members."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.fc = nn.Linear(5, 4).double()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) if self.fc.weight.sum() > 0 else -self.fc(x)


def test_vmapped_pass_equals_each_member_called_alone() -> None:
    models = [_mlp(7, 0), _mlp(3, 1), _mlp(7, 2), nn.Linear(5, 4).double(), _mlp(7, 3)]
    x = torch.randn(6, 5, dtype=torch.float64)
    predictor = Predictor(models, torch.device("cpu"), example=x[:2])
    assert [g.indices for g in predictor.groups] == [[0, 2, 4], [1], [3]]
    assert [g.vmapped for g in predictor.groups] == [True, False, False]
    got = predictor(x)
    alone = torch.stack([m(x) for m in models])
    assert got.shape == (5, 6, 4)
    assert torch.allclose(got, alone, atol=1e-12, rtol=0)
    one_by_one = Predictor(models, torch.device("cpu"), vmap_groups=False)(x)
    assert torch.allclose(got, one_by_one, atol=1e-12, rtol=0)


def test_a_model_vmap_cannot_batch_runs_one_by_one_with_a_note() -> None:
    models = [_Branchy(0), _Branchy(1)]
    x = torch.randn(3, 5, dtype=torch.float64)
    predictor = Predictor(models, torch.device("cpu"), example=x)
    assert predictor.groups[0].vmapped is False
    assert "_Branchy members run one by one" in predictor.notes[0]
    assert torch.allclose(predictor(x), torch.stack([m(x) for m in models]))


def test_collect_keeps_every_member_output_of_the_split_in_order() -> None:
    models = [_mlp(4, 0), _mlp(4, 1)]
    x, y = torch.randn(11, 5, dtype=torch.float64), torch.randint(0, 4, (11,))
    got = collect(Predictor(models, torch.device("cpu")), (x, y), 4, "val")
    assert got.outputs.shape == (2, 11, 4)
    assert torch.equal(got.targets, y)
    assert torch.allclose(got.outputs[1], models[1](x).detach())


def test_members_predict_in_eval_mode() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.Dropout(0.9)).double()
    x = torch.randn(8, 5, dtype=torch.float64)
    out = Predictor([model, model], torch.device("cpu"))(x)
    assert torch.allclose(out[0], model.eval()(x).detach())
