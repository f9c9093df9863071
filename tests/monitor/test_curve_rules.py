"""The loss-curve rules on curves shaped like issue 12's reports (synthetic metrics.jsonl)."""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from babysit.monitor.diagnose import diagnose

VOCAB = math.log(50257)  # nanoGPT's loss at init: 10.8


def _stream(losses: Any, *, per_epoch: int = 200) -> list[dict[str, Any]]:
    """A watch() run with no chance loss given (the README's loop), then one batch per loss."""
    head = {"kind": "event", "step": 0, "what": "watch", "steps_per_epoch": per_epoch}
    batches = [
        {"kind": "batch", "step": i + 1, "epoch": (i + 1) / per_epoch, "loss": float(v)}
        for i, v in enumerate(losses)
    ]
    return [head, *batches]


def _ratios(steps: range, ratio: float) -> list[dict[str, Any]]:
    values = {f"h{i}.weight": ratio * (1 + 0.1 * i) for i in range(6)}
    return [{"kind": "probe", "step": s, "name": "update_ratio", "values": values} for s in steps]


def _too_high_curve(n: int = 2000, seed: int = 0) -> np.ndarray:
    """nanoGPT at 100x its lr: a fast drop from 10.8 in the first steps, then stuck at ~6.5
    with a slow creep down (a healthy lr goes on to ~3.3)."""
    t = np.arange(n)
    rng = np.random.default_rng(seed)
    return 6.5 + (VOCAB - 6.5) * np.exp(-t / 15) - 0.2 * t / n + rng.normal(0, 0.08, n)


def test_a_fast_drop_then_a_plateau_with_large_updates_is_lr_too_high_not_too_low() -> None:
    records = [*_stream(_too_high_curve()), *_ratios(range(50, 2000, 50), 0.03)]
    found = [f for f in diagnose(records) if f.severity != "info"]
    assert [f.code for f in found] == ["lr_too_high"]  # was: lr_too_low, "raise the lr"
    assert found[0].evidence["shape"] == "stalled"
    assert "lower the learning rate" in found[0].advice
    assert "update_ratio_high" in found[0].evidence["explains"]  # one finding, one direction


def test_the_same_plateau_with_updates_near_1e3_is_no_lr_finding() -> None:
    records = [*_stream(_too_high_curve()), *_ratios(range(50, 2000, 50), 1.5e-3)]
    assert not [f for f in diagnose(records) if f.code.startswith("lr_")]


def test_a_steady_linear_fall_from_the_start_is_lr_too_low() -> None:
    t = np.arange(2000)
    linear = 2.3 - 0.45 * t / 2000 + np.random.default_rng(0).normal(0, 0.02, 2000)
    (finding,) = [f for f in diagnose(_stream(linear)) if f.code.startswith("lr")]
    assert finding.code == "lr_too_low" and "raise the learning rate" in finding.advice


def test_an_exploded_loss_is_reported_with_readable_numbers() -> None:
    t = np.arange(300)
    records = _stream(np.minimum(2.3 * np.exp(t / 5), 1e35))
    (finding,) = diagnose(records)
    assert finding.code == "lr_too_high"
    assert re.search(r"grew to \d\.\d+e\d\d, \d\.?\d*e\d\dx its start", finding.message)
    assert "%" not in finding.message  # was: "(5916280628521201403312220070% of chance)"
    assert len(max(finding.message.split(), key=len)) < 12  # no 30-digit number


def test_messages_say_which_reference_they_use() -> None:
    t = np.arange(400)
    noisy = np.abs(0.1 + 2.2 * np.exp(-t / 60) + np.random.default_rng(1).normal(0, 0.4, 400))
    batch = {"kind": "event", "step": 1, "what": "batch_size", "size": 2}
    (finding,) = [f for f in diagnose([*_stream(noisy), batch]) if f.code == "loss_noisy"]
    assert "of the initial loss (" in finding.message and "chance" not in finding.message
    assert "a batch of 2" in finding.message
    given = [{**_stream(noisy)[0], "chance_loss": math.log(10)}, *_stream(noisy)[1:], batch]
    (finding,) = [f for f in diagnose(given) if f.code == "loss_noisy"]
    assert "of chance (2.303)" in finding.message
