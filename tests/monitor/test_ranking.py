"""The first finding is the one to act on: causes before consequences, one lr direction
(issue 12, defects 3, 4 and 5)."""

from __future__ import annotations

import math

from babysit.monitor._findings import CODES, Finding
from babysit.monitor._ranking import EXPLAINED_BY, TIERS, rank


def _f(code: str, severity: str = "warning", step: int = 100, **evidence: object) -> Finding:
    return Finding(code, severity, step, "m", "a", dict(evidence))


def test_every_code_has_a_tier_and_an_explained_by_entry() -> None:
    tiered = [c for _, codes in TIERS for c in codes]
    assert sorted(tiered) == sorted(CODES) and sorted(EXPLAINED_BY) == sorted(CODES)


def test_dead_units_come_before_the_generic_error_and_absorb_the_update_ratios() -> None:
    # the old order: not_learning (error) first, then update_ratio_low, then dead_relu
    found = rank(
        [
            _f("not_learning", "error", 430),
            _f("update_ratio_low", step=201),
            _f("dead_relu", step=408, at_init=True),
        ]
    )
    assert [f.code for f in found] == ["dead_relu"]
    assert found[0].evidence["explains"] == ["not_learning", "update_ratio_low"]


def test_overfitting_comes_first_and_absorbs_the_low_update_ratios() -> None:
    # the old order: update_ratio_low (step 201) "raise the lr" before overfitting (step 3000)
    found = rank(
        [_f("update_ratio_low", step=201), _f("overfitting", step=3000), _f("dead_relu", "info")]
    )
    assert [f.code for f in found] == ["overfitting", "dead_relu"]


def test_lr_advice_never_points_both_ways() -> None:
    found = rank([_f("update_ratio_low"), _f("lr_too_high"), _f("lr_too_low")])
    assert [f.code for f in found] == ["lr_too_high"]
    found = rank([_f("update_ratio_high"), _f("update_ratio_low")])
    assert [f.code for f in found] == ["update_ratio_high"]


def test_update_ratios_defer_to_a_cause_that_explains_them() -> None:
    for cause in ("vanishing_gradients", "reg_too_strong", "overfitting", "saturation"):
        found = rank([_f("update_ratio_low"), _f(cause, at_init=True)])
        assert [f.code for f in found] == [cause]
    found = rank([_f("update_ratio_high"), _f("reg_too_strong")])
    assert [f.code for f in found] == ["reg_too_strong"]


def test_after_a_divergence_only_the_divergence_and_wiring_bugs_stand() -> None:
    wreck = [
        _f("underfitting"),
        _f("dead_relu", at_init=False),
        _f("loss_noisy"),
        _f("lr_too_high"),
        _f("diverged", "error", 417, loss=math.nan),
        _f("grads_not_zeroed", "error", 2),
        _f("frozen_parameters", "info", None),  # type: ignore[arg-type]
    ]
    assert [f.code for f in rank(wreck)] == ["grads_not_zeroed", "diverged", "frozen_parameters"]


def test_units_killed_during_training_defer_to_a_too_high_lr() -> None:
    died = _f("dead_relu", at_init=False)
    assert [f.code for f in rank([died, _f("lr_too_high")])] == ["lr_too_high"]
    dead_from_init = _f("dead_relu", at_init=True)
    found = rank([dead_from_init, _f("update_ratio_high")])
    assert [f.code for f in found] == ["dead_relu"]


def test_errors_first_within_a_tier_then_the_tier_order_then_the_step() -> None:
    found = rank([_f("saturation", step=5), _f("dead_relu", step=50), _f("reg_too_strong", step=1)])
    assert [f.code for f in found] == ["dead_relu", "saturation", "reg_too_strong"]


def test_collapsed_weights_explain_a_stall_with_large_updates_but_not_an_explosion() -> None:
    # weights near 0 make any update large next to them: the penalty, not the lr
    stalled = rank([_f("lr_too_high", shape="stalled"), _f("reg_too_strong")])
    assert [f.code for f in stalled] == ["reg_too_strong"]
    exploding = rank([_f("lr_too_high", shape="exploding"), _f("reg_too_strong")])
    assert [f.code for f in exploding] == ["reg_too_strong", "lr_too_high"]


def test_a_tiny_batch_comes_before_the_lr_read_from_its_noisy_curve() -> None:
    found = rank([_f("lr_too_low"), _f("loss_noisy")])
    assert [f.code for f in found] == ["loss_noisy", "lr_too_low"]
