"""Diagnosis rules on synthetic metrics shaped like the notes' curves, and findings.json."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from babysit.monitor._history import CAPACITY, RECENT, RunHistory
from babysit.monitor.diagnose import (
    CODES,
    DIAGNOSES,
    Finding,
    diagnose,
    write_findings,
)

CHANCE = math.log(10)  # 2.302


def _stream(
    losses: Any, *, per_epoch: int = 50, chance: float | None = CHANCE
) -> list[dict[str, Any]]:
    head = {
        "kind": "event",
        "step": 0,
        "what": "watch",
        "chance_loss": chance,
        "steps_per_epoch": per_epoch,
    }
    batches = [
        {"kind": "batch", "step": i + 1, "epoch": (i + 1) / per_epoch, "loss": float(v)}
        for i, v in enumerate(losses)
    ]
    return [head, *batches]


def _healthy(n: int = 500, seed: int = 0) -> np.ndarray:
    """Fast-then-slow decay to 0.1 with a little batch noise: the notes' "good" curve."""
    t = np.arange(n)
    return 0.1 + 2.2 * np.exp(-t / 60) + np.random.default_rng(seed).normal(0, 0.02, n)


def _codes(
    records: list[dict[str, Any]], severity: tuple[str, ...] = ("warning", "error")
) -> set[str]:
    return {f.code for f in diagnose(records) if f.severity in severity}


DESIGNED = [  # DESIGN.md's fixed codes, in its order; issues add codes after them
    "lr_too_high",
    "lr_too_low",
    "loss_noisy",
    "overfitting",
    "underfitting",
    "update_ratio_high",
    "update_ratio_low",
    "dead_relu",
    "saturation",
    "vanishing_gradients",
    "exploding_gradients",
    "diverged",
    "not_learning",
]
ADDED = ("grads_not_zeroed", "reg_too_strong", "labels_suspect", "frozen_parameters")


def test_the_registry_holds_the_designed_codes_then_the_added_ones() -> None:
    assert sorted(DIAGNOSES) == sorted(CODES)
    assert list(CODES[:13]) == DESIGNED
    assert CODES[13:] == ADDED


def test_a_healthy_curve_raises_nothing() -> None:
    assert diagnose(_stream(_healthy())) == []


def test_exploding_loss_is_lr_too_high() -> None:
    t = np.arange(300)
    (finding,) = diagnose(_stream(2.3 * np.exp(t / 100)))
    assert finding.code == "lr_too_high" and finding.severity == "warning"
    assert "lower the learning rate" in finding.advice


def test_a_loss_that_falls_then_bounces_back_up_is_lr_too_high() -> None:
    t = np.arange(400)
    losses = np.where(t < 150, 2.3 - 1.5 * t / 150, 0.8 + 0.6 * (t - 150) / 250)
    assert "lr_too_high" in _codes(_stream(losses))


def test_a_slow_nearly_linear_decrease_is_lr_too_low() -> None:
    losses = CHANCE - 0.0004 * np.arange(500)  # falls 0.2 in 10 epochs, at a constant rate
    assert _codes(_stream(losses)) == {"lr_too_low"}  # which explains the not_learning
    assert "lr_too_low" not in _codes(_stream(_healthy()))


def _batch_size(size: int) -> dict[str, Any]:
    return {"kind": "event", "step": 1, "what": "batch_size", "size": size}


def test_batch_to_batch_wiggle_of_a_tiny_batch_is_loss_noisy() -> None:
    noisy = np.abs(_healthy() + np.random.default_rng(1).normal(0, 0.4, 500))
    assert "loss_noisy" in _codes([*_stream(noisy), _batch_size(2)])
    assert "loss_noisy" in _codes(_stream(noisy))  # batch size unknown: the wiggle decides
    # threshold 0.3 x the level: a wiggle of about the level itself is beyond it
    m = RunHistory.from_records(_stream(noisy))
    assert DIAGNOSES["loss_noisy"](m, noisy=5.0) == []


def test_the_irreducible_wiggle_of_a_batch_of_32_is_no_alarm() -> None:
    # class overlap: the per-example losses spread ~0.7 around 0.6, a batch of 32 averages
    # them to a wiggle of 0.7 / sqrt(32) = 0.12 -- 18 % of chance (ln 2), a fifth of the level
    rng = np.random.default_rng(2)
    level = 0.6 + 0.1 * np.exp(-np.arange(600) / 50)
    losses = level + rng.normal(0, 0.7 / math.sqrt(32), 600)
    records = _stream(losses, chance=math.log(2))
    assert "loss_noisy" not in _codes([*records, _batch_size(32)])
    assert "loss_noisy" not in _codes(records)  # and below 0.3 x the level without it


def test_a_nan_loss_is_diverged_at_its_first_step() -> None:
    losses = [*_healthy(100), math.nan, math.inf, 1.0]
    (finding,) = [f for f in diagnose(_stream(losses)) if f.code == "diverged"]
    assert finding.step == 101 and finding.severity == "error"


def test_a_diverged_event_is_diverged() -> None:
    records = [
        *_stream(_healthy(50)),
        {"kind": "event", "step": 50, "what": "diverged", "loss": math.nan},
    ]
    assert "diverged" in _codes(records)


def test_loss_at_chance_after_an_epoch_is_not_learning() -> None:
    flat = CHANCE + np.random.default_rng(0).normal(0, 0.01, 120)
    assert _codes(_stream(flat)) == {"not_learning"}
    assert _codes(_stream(flat[:40])) == set()  # under one epoch: too early to say


def _probe(name: str, step: int, values: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "probe", "step": step, "name": name, "values": values}


@pytest.mark.parametrize(
    ("early", "late", "code"),
    [
        (1e-2, 2e-2, "update_ratio_high"),  # 10x above 1e-3 after the first steps
        (3e-5, 3e-5, "update_ratio_low"),  # 10x below it from the start
        (1e-2, 2e-3, None),  # Adam's large first steps, then ~1e-3: healthy
        (1e-3, 5e-5, None),  # a decayed lr late in the run: healthy
    ],
)
def test_update_ratios_beyond_the_symmetric_band_are_one_finding(
    early: float, late: float, code: str | None
) -> None:
    flat = 0.1 + np.random.default_rng(0).normal(0, 1e-3, 200)  # the curve says nothing
    records = [*_stream(flat)]
    records.append(_probe("update_ratio", 1, {"w1": 50.0, "w2": 50.0, "w3": 1e-3}))
    for step in (51, 81, 121, 151, 191):  # 200 steps: the second half starts after step 100
        ratio = early if step <= 100 else late
        records.append(_probe("update_ratio", step, {"w1": ratio, "w2": ratio, "w3": 1e-3}))
    found = [f for f in diagnose(records) if f.code.startswith("update_ratio")]
    if code is None:
        assert found == []
    else:
        (finding,) = found  # one finding for all the tensors, not one per tensor
        assert finding.code == code and sorted(finding.evidence["ratios"]) == ["w1", "w2"]
        assert "w1" in finding.message and "w2" in finding.message
    one = [_probe("update_ratio", s, {"w1": 3e-5, "w2": 1e-3, "w3": 1e-3}) for s in (51, 81)]
    assert diagnose([*_stream(flat), *one]) == []  # one tensor of three: no verdict


def _act(dead: float | None = None, saturated: float | None = None) -> dict[str, Any]:
    return {"a1": {"mean": 0.1, "std": 1.0, "dead": dead, "saturated": saturated}}


@pytest.mark.parametrize(("field", "code"), [("dead", "dead_relu"), ("saturated", "saturation")])
def test_layer_problems_are_warnings_at_the_latest_probe_and_info_if_recovered(
    field: str, code: str
) -> None:
    bad, good = _act(**{field: 0.9}), _act(**{field: 0.1})
    (latest,) = diagnose([_probe("act_stats", 4, good), _probe("act_stats", 54, bad)])
    assert (latest.code, latest.severity, latest.step) == (code, "warning", 54)
    (early,) = diagnose([_probe("act_stats", 4, bad), _probe("act_stats", 54, good)])
    assert (early.code, early.severity, early.step) == (code, "info", 4)
    assert diagnose([_probe("act_stats", 4, good)]) == []


def test_gradients_shrinking_layer_by_layer_are_vanishing() -> None:
    norms = {"fc1": 1e-9, "fc2": 1e-7, "fc3": 1e-5, "fc4": 1e-3, "out": 0.1}  # x100 per layer
    (finding,) = diagnose([_probe("grad_norm", 4, norms)])
    assert finding.code == "vanishing_gradients"
    assert finding.evidence["per_layer"] == pytest.approx(0.01)
    assert finding.evidence["total"] == pytest.approx(1e-6)
    assert "1e6x across 4 layers" in finding.message and "100x per layer" in finding.message
    grow = {"fc1": 1e3, "fc2": 10.0, "fc3": 0.1, "out": 0.1}
    assert _codes([_probe("grad_norm", 4, grow)]) == {"exploding_gradients"}
    # the output layer's small init scale alone is not a shrink
    assert diagnose([_probe("grad_norm", 4, {"fc1": 1e-3, "fc2": 1e-3, "out": 0.1})]) == []


def test_findings_json_is_atomic_and_most_severe_first(tmp_path: Path) -> None:
    findings = [
        Finding("dead_relu", "info", 4, "m", "a"),
        Finding("diverged", "error", 9, "m", "a", {"loss": math.nan}),
        Finding("lr_too_low", "warning", 100, "m", "a", {"drop": math.inf}),
    ]
    path = write_findings(tmp_path / "findings.json", findings)
    text = path.read_text()

    def strict(token: str) -> None:
        raise AssertionError(f"not strict JSON: {token}")

    data = json.loads(text, parse_constant=strict)
    assert [d["severity"] for d in data] == ["error", "warning", "info"]
    assert data[0]["evidence"] == {"loss": "nan"} and set(data[0]) == {
        "code",
        "severity",
        "step",
        "message",
        "advice",
        "evidence",
    }
    assert [p.name for p in tmp_path.iterdir()] == ["findings.json"]  # no temp file left


def test_finding_rejects_unknown_codes_and_severities() -> None:
    with pytest.raises(ValueError, match="code"):
        Finding("lr_wrong", "warning", 1, "m", "a")
    with pytest.raises(ValueError, match="severity"):
        Finding("diverged", "fatal", 1, "m", "a")


def test_metrics_stay_bounded_and_keep_the_curve_mean() -> None:
    n = 100_000
    losses = np.random.default_rng(0).random(n)
    m = RunHistory.from_records(_stream(losses, per_epoch=1000))
    assert len(m.curve) <= CAPACITY and len(m.recent) == RECENT
    kept = m.curve.stride * len(m.curve)  # whole strides; the partial one is pending
    assert statistics.fmean(m.curve.values) == pytest.approx(losses[:kept].mean(), rel=1e-9)
    assert m.epochs_done == pytest.approx(100.0)
