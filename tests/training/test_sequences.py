"""babysit train on a language model: per-token accuracy, the best epoch, the findings.

The setup that showed the problem: a GPT-like model with (N, T) targets was scored 0 %
(its outputs are (N, T, C)), which made a false "underfitting" finding and kept the
first epoch as the best.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from babysit.training.checkpoint import list_checkpoints, load_checkpoint
from babysit.training.population import train_population
from babysit.training.run import train

from ..sequence_models import LogitsOnly, TinyGPT, lm_task


def _config(epochs: int, lr: float) -> dict[str, Any]:
    return {
        "optim": {"rule": "adam", "lr": lr},
        "train": {"epochs": epochs, "batch_size": 32, "reg": 0.0, "seed": 0, "report": False},
    }


def _token_accuracy(model: torch.nn.Module, split: tuple[torch.Tensor, torch.Tensor]) -> float:
    """The oracle: right / scored over every token whose target is not negative."""
    x, y = split
    with torch.no_grad():
        right = model.eval()(x).argmax(-1) == y
    scored = y >= 0
    return (right & scored).sum().item() / scored.sum().item()


def test_train_and_val_accuracy_are_per_token_with_padding_ignored(tmp_path: Path) -> None:
    task = lm_task()
    x, y = task.train
    y[::2, -3:] = -1  # half the training sequences padded at their end (nanoGPT's -1)
    task.train = task.train_eval = (x, y)
    # an lr of 1e-12 leaves the weights (and every argmax) where they started: the
    # training accuracy is then that of the final weights, which the oracle recomputes
    run = train(_config(1, 1e-12), task=task, out=tmp_path / "run", quiet=True)
    (record,) = [r for r in run.metrics if r["kind"] == "epoch"]
    model = LogitsOnly(TinyGPT())
    (ckpt,) = list_checkpoints(run.dir / "checkpoints")
    model.load_state_dict(load_checkpoint(ckpt.path)["model"])
    assert record["train_acc"] == pytest.approx(_token_accuracy(model, (x, y)), abs=1e-9)
    assert record["val_acc"] == pytest.approx(_token_accuracy(model, task.val), abs=1e-9)
    assert 0.02 < record["val_acc"] < 0.3  # about chance (1 / 11), not 0


def test_a_learning_language_model_keeps_its_best_epoch_and_is_not_underfitting(
    tmp_path: Path,
) -> None:
    run = train(_config(8, 1e-2), task=lm_task(), out=tmp_path / "run", quiet=True)
    epochs = [r for r in run.metrics if r["kind"] == "epoch"]
    val = [r["val_acc"] for r in epochs]
    assert val[-1] > 0.25 > 2 / 11  # learning, far above chance
    assert run.best["epoch"] == 1 + max(range(len(val)), key=val.__getitem__) > 1
    findings = json.loads((run.dir / "findings.json").read_text())
    # the loss fell below 0.9 x chance: with a 0 % accuracy the rule fired here
    assert epochs[-1]["train_loss"] < 0.9 * 2.398
    assert "underfitting" not in {f["code"] for f in findings}


def test_a_population_scores_tokens_as_the_trainer_does(tmp_path: Path) -> None:
    config = _config(2, 1e-2)
    single = train(config, task=lm_task(), out=tmp_path / "single", quiet=True)
    pop = train_population(
        config, [{}, {"optim.lr": 3e-3}], task=lm_task(), engine="sequential", device="cpu"
    )
    assert pop.members[0].best == pytest.approx(single.best, rel=1e-5)
    assert pop.members[0].best["val_acc"] > 0.05
