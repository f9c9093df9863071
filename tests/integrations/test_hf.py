"""babysit.integrations.hf.BabysitCallback in real Hugging Face Trainer fits (no mocks).

A tiny BERT built from its config (no download) classifies synthetic token-id sequences:
class c puts its marker token (2 + c) at 3 random positions among random tokens 4..99.
``initializer_range`` is BERT-base's 0.02 scaled to the width, 0.02 * sqrt(768 / 32) = 0.1:
at 0.02 every lr that learns in 100 steps moves the weights by 1-2 % per step, which the
monitor rightly calls update_ratio_high (the notes' ~0.1 %).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from .conftest import check_run_dir, codes, records

transformers = pytest.importorskip(
    "transformers", reason="transformers is not installed: pip install 'babysit[hf]'"
)
pytest.importorskip("accelerate", reason="accelerate is not installed: pip install 'babysit[hf]'")
from transformers import (  # noqa: E402
    BertConfig,
    BertForSequenceClassification,
    PrinterCallback,
    Trainer,
    TrainingArguments,
)

from babysit.integrations.hf import BabysitCallback  # noqa: E402

pytestmark = pytest.mark.slow
LENGTH, STEPS = 16, 100


class Markers(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """Token ids (N, 16) and labels (N,): the class is the marker token the sequence holds."""

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randint(4, 100, (n, LENGTH), generator=g)
        self.y = torch.randint(0, 2, (n,), generator=g)
        where = torch.stack([torch.randperm(LENGTH, generator=g)[:3] for _ in range(n)])
        self.x.scatter_(1, where, (2 + self.y).unsqueeze(1).expand(-1, 3))

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        mask = torch.ones(LENGTH, dtype=torch.long)
        return {"input_ids": self.x[i], "attention_mask": mask, "labels": self.y[i]}


def accuracy(prediction: Any) -> dict[str, float]:
    return {
        "accuracy": float((np.argmax(prediction.predictions, -1) == prediction.label_ids).mean())
    }


class LossTimesTen(BertForSequenceClassification):  # type: ignore[misc]
    """A planted bug: the returned loss is 10x the cross-entropy."""

    def forward(self, input_ids: Any = None, attention_mask: Any = None, labels: Any = None) -> Any:
        out = super().forward(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
        if out.loss is not None:
            out.loss = out.loss * 10
        return out


def fit(
    out: Path,
    lr: float,
    callback: BabysitCallback | None,
    model_class: Any = None,
    trainer_class: Any = None,
    **args: Any,
) -> Any:
    """The usual Trainer code, with the callback added."""
    torch.manual_seed(0)
    config = BertConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        vocab_size=100,
        num_labels=2,
        initializer_range=0.1,
    )
    model = (model_class or BertForSequenceClassification)(config)
    options = {"max_steps": STEPS, "per_device_train_batch_size": 16, "learning_rate": lr}
    options |= {"eval_strategy": "steps", "eval_steps": 25, "save_strategy": "no", "seed": 0}
    options |= {"disable_tqdm": True, "logging_steps": 10, **args}
    trainer = (trainer_class or Trainer)(
        model=model,
        args=TrainingArguments(output_dir=str(out), report_to=[], use_cpu=True, **options),
        train_dataset=Markers(1024, 0),
        eval_dataset=Markers(256, 1),
        compute_metrics=accuracy,
        callbacks=[callback] if callback else [],
    )
    trainer.remove_callback(PrinterCallback)  # with tqdm off it prints every log dict
    trainer.train()
    return trainer


@pytest.fixture(scope="module")
def healthy(tmp_path_factory: pytest.TempPathFactory) -> tuple[BabysitCallback, Any, Path]:
    out = tmp_path_factory.mktemp("hf") / "healthy"
    cb = BabysitCallback(sanity=True, gradcheck=True)
    return cb, fit(out, 1e-3, cb), out


def test_healthy_fit_writes_metrics_findings_report_and_has_no_warnings(
    healthy: tuple[BabysitCallback, Any, Path],
) -> None:
    cb, trainer, out = healthy
    assert cb.log_dir == out / "babysit"  # the default: args.output_dir/babysit
    assert trainer.state.global_step == STEPS
    findings = check_run_dir(cb.log_dir, batches=STEPS)
    assert codes(findings) == []
    epochs = records(cb.log_dir, "epoch")  # one per evaluation, every 25 steps
    assert [(e["epoch"], e["step"]) for e in epochs] == [(i, 25 * i) for i in (1, 2, 3, 4)]
    assert all({"val_loss", "val_acc"} <= set(e) for e in epochs)
    assert epochs[-1]["val_acc"] > 0.9  # it learned: the monitor watched a real fit
    assert json.loads((cb.log_dir / "sanity.json").read_text())["passed"]
    assert json.loads((cb.log_dir / "gradcheck.json").read_text())["passed"]


def test_step_losses_are_the_models_returned_losses(
    healthy: tuple[BabysitCallback, Any, Path],
) -> None:
    """The Trainer logs the mean of the step losses over each 10 steps: the records agree."""
    cb, trainer, _ = healthy
    assert cb.log_dir is not None
    losses = [b["loss"] for b in records(cb.log_dir, "batch")]
    logged = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(logged) == STEPS // 10
    means = [float(np.mean(losses[i : i + 10])) for i in range(0, STEPS, 10)]
    assert means == pytest.approx(logged, rel=1e-3)


def test_a_learning_rate_100x_too_high_is_named(tmp_path: Path) -> None:
    cb = BabysitCallback(tmp_path / "high")
    fit(tmp_path / "out", 1e-1, cb)
    assert "lr_too_high" in codes(check_run_dir(tmp_path / "high", batches=STEPS))


def test_gradient_accumulation_records_optimizer_steps(tmp_path: Path) -> None:
    cb = BabysitCallback(tmp_path / "acc")
    trainer = fit(tmp_path / "out", 1e-3, cb, gradient_accumulation_steps=2, max_steps=20)
    assert len(records(tmp_path / "acc", "batch")) == trainer.state.global_step == 20


def test_failed_sanity_check_stops_training_with_the_report(tmp_path: Path) -> None:
    cb = BabysitCallback(tmp_path / "bug", sanity=True)
    trainer = fit(tmp_path / "out", 1e-3, cb, model_class=LossTimesTen)
    assert trainer.state.global_step <= 1  # stopped before a second optimizer step
    sanity = json.loads((tmp_path / "bug" / "sanity.json").read_text())
    assert not sanity["passed"]
    chance = next(c for c in sanity["checks"] if c["name"] == "chance_loss")
    assert chance["verdict"] == "fail" and chance["observed"] == pytest.approx(6.93, rel=0.1)
    assert (tmp_path / "bug" / "report.html").is_file()
    assert records(tmp_path / "bug", "batch") == []


def test_a_custom_compute_loss_is_recorded_from_the_logged_loss(tmp_path: Path) -> None:
    """The model returns no loss (the Trainer computes it): the loss logged every 10 steps
    is what is recorded."""

    class OwnLoss(Trainer):  # type: ignore[misc]
        def compute_loss(
            self, model: Any, inputs: Any, return_outputs: bool = False, **kwargs: Any
        ) -> Any:
            labels = inputs.pop("labels")
            out = model(**inputs)
            loss = torch.nn.functional.cross_entropy(out.logits, labels)
            return (loss, out) if return_outputs else loss

    cb = BabysitCallback(tmp_path / "own")
    trainer = fit(tmp_path / "out", 1e-3, cb, None, OwnLoss, max_steps=30, eval_strategy="no")
    logged = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    batches = records(tmp_path / "own", "batch")
    assert len(logged) == 3 and [b["loss"] for b in batches] == pytest.approx(logged)
    assert len(records(tmp_path / "own", "epoch")) == 1  # eval_strategy="no": epochs end it


def test_the_checks_leave_the_fit_as_it_was(
    healthy: tuple[BabysitCallback, Any, Path], tmp_path: Path
) -> None:
    """The same fit without the checks gives the same first losses (the first two steps: the
    same initial weights and batches, and the same lr, as the linear schedule's first factor
    is 1 whatever max_steps): the checks ran on copies, the first batch was drawn with the
    random state put back."""
    cb, _, _ = healthy
    assert cb.log_dir is not None
    fit(tmp_path / "out", 1e-3, BabysitCallback(tmp_path / "plain"), max_steps=2)
    with_checks = [b["loss"] for b in records(cb.log_dir, "batch")]
    without = [b["loss"] for b in records(tmp_path / "plain", "batch")]
    assert len(without) == 2 and with_checks[:2] == pytest.approx(without, rel=1e-6)
