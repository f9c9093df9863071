"""The epoch rules judge on the task's metric (gap and trend), the loss only supporting it
(issue 12, defects 7 and 8; synthetic metrics.jsonl)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from babysit.monitor.diagnose import diagnose

PER_EPOCH = 40


def _run(curve: Any, *, chance: float | None = None, **series: list[float]) -> list[dict[str, Any]]:
    """A watched run: batch losses ``curve``, then one epoch record per entry of the series."""
    head = {"kind": "event", "step": 0, "what": "watch", "steps_per_epoch": PER_EPOCH}
    if chance is not None:
        head["chance_loss"] = chance
    batches = [
        {"kind": "batch", "step": i + 1, "epoch": (i + 1) / PER_EPOCH, "loss": float(v)}
        for i, v in enumerate(curve)
    ]
    n = len(next(iter(series.values())))
    epochs = [
        {"kind": "epoch", "epoch": e + 1, "step": PER_EPOCH * (e + 1)}
        | {key: values[e] for key, values in series.items()}
        for e in range(n)
    ]
    return [head, *batches, *epochs]


def _falling(epochs: int, start: float, end: float, seed: int = 0) -> np.ndarray:
    """A loss that keeps falling (fast, then slowly) from ``start`` to ``end``."""
    t = np.arange(epochs * PER_EPOCH)
    shape = np.exp(-t / (epochs * PER_EPOCH / 6))
    noise = np.random.default_rng(seed).normal(0, 0.01 * start, t.size)
    return np.abs(end + (start - end) * shape - 0.02 * end * t / t.size + noise)


def _codes(records: list[dict[str, Any]]) -> list[str]:
    return [f.code for f in diagnose(records) if f.severity != "info"]


def test_val_loss_rising_while_val_accuracy_holds_is_not_overfitting() -> None:
    # a healthy net on data with little noise: it grows confident on a few hard val examples
    val_acc = [0.94, 0.96, 0.97, 0.97, 0.975, 0.97, 0.975, 0.97, 0.97, 0.975, 0.97, 0.97]
    val_loss = [0.2, 0.12, 0.09, 0.085, 0.09, 0.095, 0.1, 0.105, 0.11, 0.115, 0.12, 0.125]
    train_loss = [0.3 / (e + 1) for e in range(12)]  # falls all along
    curve = _falling(12, 0.69, 0.02)
    logged = _run(curve, val_acc=val_acc, val_loss=val_loss, train_loss=train_loss)
    assert "overfitting" not in _codes(logged)  # was: "val loss rose ... while train loss fell"
    train_acc = [0.9, 0.95, 0.97, 0.98, 0.985, 0.99, 0.99, 0.99, 0.99, 0.995, 0.995, 0.995]
    full = _run(curve, val_acc=val_acc, val_loss=val_loss, train_acc=train_acc)
    assert "overfitting" not in _codes(full)  # a gap of 2 %


def test_val_accuracy_falling_from_its_best_while_training_fits_is_overfitting() -> None:
    val_acc = [0.6, 0.68, 0.72, 0.74, 0.73, 0.71, 0.70, 0.69, 0.68, 0.67, 0.66, 0.66]
    assert _codes(_run(_falling(12, 1.38, 0.05), val_acc=val_acc))[:1] == ["overfitting"]


def test_a_large_gap_with_stalled_val_and_rising_val_loss_is_overfitting() -> None:
    # val accuracy holds at its plateau, but train fits everything: the gap is the problem
    val_acc = [0.6, 0.75, 0.82, 0.85, 0.86, 0.86, 0.86, 0.855, 0.86, 0.86, 0.855, 0.86]
    val_loss = [1.6, 1.0, 0.7, 0.55, 0.5, 0.52, 0.55, 0.58, 0.6, 0.62, 0.64, 0.66]
    curve = _falling(12, 2.3, 1e-3)
    found = diagnose(_run(curve, val_acc=val_acc, val_loss=val_loss))
    assert [f.code for f in found] == ["overfitting"]
    # no train_acc logged: bounded from the loss, error rate <= loss / ln 2
    assert found[0].evidence["train_acc"] > 0.95 and "at least" in found[0].message
    still_improving = [0.6, 0.7, 0.72, 0.74, 0.75, 0.76, 0.77, 0.775, 0.78, 0.785, 0.79, 0.79]
    flat_loss = [1.0, 0.8, 0.75, 0.72, 0.7, 0.7, 0.69, 0.7, 0.69, 0.7, 0.7, 0.69]
    train_acc = [0.5, 0.7, 0.75, 0.78, 0.8, 0.82, 0.84, 0.85, 0.86, 0.87, 0.88, 0.9]
    healthy = _run(
        _falling(12, 1.38, 0.3), val_acc=still_improving, val_loss=flat_loss, train_acc=train_acc
    )
    assert "overfitting" not in _codes(healthy)


def test_val_at_chance_while_training_fits_is_labels_suspect_not_overfitting() -> None:
    # shuffled train labels: the net memorises them; val wanders around 1/10
    val_acc = [0.15, 0.13, 0.11, 0.12, 0.10, 0.11, 0.09, 0.10, 0.11, 0.09, 0.10, 0.10]
    train_acc = [0.1, 0.15, 0.2, 0.24, 0.28, 0.32, 0.36, 0.4, 0.44, 0.48, 0.52, 0.55]
    curve = _falling(12, math.log(10), 1.45)
    for logged in ({"val_acc": val_acc}, {"val_acc": val_acc, "train_acc": train_acc}):
        found = diagnose(_run(curve, **logged))
        assert found[0].code == "labels_suspect" and "overfitting" not in _codes(
            _run(curve, **logged)
        )
        assert "labels match the inputs" in found[0].advice
        assert found[0].evidence["chance_acc"] == 0.1


def test_underfitting_needs_no_fixed_accuracy_but_a_converged_loss_with_no_gap() -> None:
    # a linear model on a spiral: 3 classes, the loss converges at 0.72 of ln 3, no gap
    flat = 0.72 + 0.4 * np.exp(-np.arange(40 * PER_EPOCH) / 60)
    flat = flat + np.random.default_rng(0).normal(0, 0.1, flat.size)
    train_acc = [0.4, 0.5, 0.53, 0.55] + [0.55] * 36
    val_acc = [0.38, 0.45, 0.46, 0.47] + [0.46] * 36
    found = diagnose(_run(flat, train_acc=train_acc, val_acc=val_acc))
    assert [f.code for f in found] == ["underfitting"]
    assert "flat at 0.7" in found[0].message and "stalled at 55.0%" in found[0].message
    # the same accuracies while the loss still falls: training is still paying off
    falling = _falling(40, 1.1, 0.3)
    assert "underfitting" not in _codes(_run(falling, train_acc=train_acc, val_acc=val_acc))


def test_a_penalty_that_is_most_of_a_small_loss_after_a_good_fit_is_not_reg_too_strong() -> None:
    """The demo's final run: the data loss fell to ~0.02 (val acc 0.99) and L2 4e-5 is half
    of what is left. Learning did not stall on the penalty: no reg_too_strong."""
    data = _falling(10, 2.3, 0.01)
    reg = np.full(data.size, 0.05)
    records = _run(data + reg, val_acc=list(np.linspace(0.9, 0.99, 10)))
    for r, d, g in zip(records[1:], data, reg, strict=False):
        r.update(data_loss=float(d), reg_loss=float(g))
    assert "reg_too_strong" not in _codes(records)
    # the same share of a loss that stays at chance is the penalty's doing
    stuck = np.full(data.size, 1.2)
    records = _run(stuck + 1.3, val_acc=[0.1] * 10)
    for r in records[1:]:
        if r["kind"] == "batch":
            r.update(data_loss=1.2, reg_loss=1.3)
    assert "reg_too_strong" in _codes(records)
