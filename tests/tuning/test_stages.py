"""Coarse -> fine: zoom around the best trials, border warnings, widening past a border."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from babysit.tuning.dimensions import Choice, Limits, Range, parse_dimension
from babysit.tuning.stages import BORDER, border_warnings, next_stage, top_trials


def _range(text: str) -> Range:
    dim = parse_dimension(text)
    assert isinstance(dim, Range)
    return dim


def _width(dim: Range) -> float:
    scale = math.log10 if dim.log else float
    return scale(dim.high) - scale(dim.low)


def test_top_trials_follow_the_direction_and_skip_non_finite_scores() -> None:
    trials = [({"x": 1}, 0.5), ({"x": 2}, float("nan")), ({"x": 3}, 0.9), ({"x": 4}, 0.1)]
    assert [t[0]["x"] for t in top_trials(trials, direction="max", k=2)] == [3, 1]
    assert [t[0]["x"] for t in top_trials(trials, direction="min", k=2)] == [4, 1]


def test_zoom_contains_the_best_and_is_narrower_in_log_space() -> None:
    lr = _range("loguniform(1e-6, 1e1)")
    # score peaks at lr = 1e-3: the top 3 are 1e-3, 3e-4, 3e-3
    values = [1e-6, 1e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 1e-1, 1.0]
    trials = [({"optim.lr": v}, -abs(math.log10(v) + 3)) for v in values]
    new, warnings = next_stage({"optim.lr": lr}, trials, direction="max", top_k=3)
    zoomed = new["optim.lr"]
    assert isinstance(zoomed, Range) and zoomed.log and warnings == []
    assert zoomed.low <= 1e-3 <= zoomed.high
    assert _width(zoomed) < _width(lr)
    # the top-k span in log10 is [-3.52, -2.52], padded by 10 % of 7 decades each side
    assert math.log10(zoomed.low) == pytest.approx(-3.52 - 0.7, abs=0.01)
    assert math.log10(zoomed.high) == pytest.approx(-2.52 + 0.7, abs=0.01)


def test_zoom_of_a_linear_range_is_linear() -> None:
    drop = _range("uniform(0, 1)")
    trials = [({"d": d}, -abs(d - 0.5)) for d in (0.1, 0.3, 0.45, 0.5, 0.55, 0.7, 0.9)]
    new, warnings = next_stage({"d": drop}, trials, direction="max", top_k=3)
    zoomed = new["d"]
    assert isinstance(zoomed, Range) and not warnings
    assert zoomed.low == pytest.approx(0.35) and zoomed.high == pytest.approx(0.65)


def test_int_ranges_stay_whole_numbers() -> None:
    hidden = _range("intuniform(16, 256)")
    trials = [({"h": h}, -abs(h - 100)) for h in (20, 60, 97, 103, 130, 200, 250)]
    new, _ = next_stage({"h": hidden}, trials, direction="max", top_k=3)
    zoomed = new["h"]
    assert isinstance(zoomed, Range) and zoomed.integer
    assert isinstance(zoomed.low, int) and isinstance(zoomed.high, int)
    assert zoomed.low <= 97 and zoomed.high >= 130 and zoomed.high - zoomed.low < 240
    assert str(zoomed) == f"intuniform({zoomed.low}, {zoomed.high})"


def test_choice_zoom_keeps_the_choices_among_the_best() -> None:
    mu = parse_dimension("choice(0.5, 0.9, 0.95, 0.99)")
    score = {0.5: 0.1, 0.9: 0.8, 0.95: 0.9, 0.99: 0.3}
    trials = [({"optim.mu": m}, score[m] + i * 1e-3) for i in range(3) for m in score]
    new, warnings = next_stage({"optim.mu": mu}, trials, direction="max", top_k=5)
    zoomed = new["optim.mu"]
    assert isinstance(zoomed, Choice) and warnings == []
    assert zoomed.choices == (0.9, 0.95)  # in the space's order
    assert zoomed.universe == (0.5, 0.9, 0.95, 0.99) and zoomed.narrowed


def test_best_on_the_high_border_warns_and_widens_past_it() -> None:
    lr = _range("loguniform(1e-6, 1e-4)")
    # score rises with lr all the way to the top of the range
    values = [1e-6, 1e-5, 3e-5, 6e-5, 9.8e-5]
    trials = [({"optim.lr": v}, math.log10(v)) for v in values]
    new, warnings = next_stage({"optim.lr": lr}, trials, direction="max", top_k=3)
    assert warnings == [
        {"param": "optim.lr", "side": "high", "value": 9.8e-5, "low": 1e-6, "high": 1e-4}
    ]
    widened = new["optim.lr"]
    assert isinstance(widened, Range) and widened.high > 1e-4  # past the border
    assert widened.low <= 3e-5  # the other end still zooms around the top k
    assert math.log10(widened.high) == pytest.approx(-4 + 0.5 * 2, abs=0.01)


def test_most_of_the_top_k_on_the_low_border_warns_low() -> None:
    reg = _range("loguniform(1e-6, 1e1)")
    lows = [1.1e-6, 1.2e-6, 1.3e-6]  # within 5 % of 7 decades above 1e-6
    top = [({"train.reg": 1e-3}, 1.0)] + [({"train.reg": v}, 0.9) for v in lows]
    top += [({"train.reg": 1e-1}, 0.8)]
    warnings = border_warnings({"train.reg": reg}, top)
    assert [(w["side"], w["value"]) for w in warnings] == [("low", 1.1e-6)]


def test_a_range_that_contains_the_optimum_does_not_warn() -> None:
    lr = _range("loguniform(1e-6, 1e1)")
    values = [10 ** (-6 + 7 * i / 40) for i in range(41)]
    trials = [({"optim.lr": v}, -abs(math.log10(v) + 2.5)) for v in values]
    _, warnings = next_stage({"optim.lr": lr}, trials, direction="max", top_k=5)
    assert warnings == []


def test_the_border_is_five_percent_of_the_log_range() -> None:
    lr = _range("loguniform(1e-6, 1e1)")
    just_in = 10 ** (1 - 7 * BORDER * 0.99)
    just_out = 10 ** (1 - 7 * BORDER * 1.01)
    assert border_warnings({"lr": lr}, [({"lr": just_in}, 1.0)])
    assert not border_warnings({"lr": lr}, [({"lr": just_out}, 1.0)])


def test_widening_stops_inside_the_keys_limits() -> None:
    mu = replace(_range("uniform(0.5, 0.99)"), limits=Limits(0.0, 1.0, high_open=True))
    trials = [({"optim.mu": m}, m) for m in (0.6, 0.8, 0.985, 0.989)]
    new, warnings = next_stage({"optim.mu": mu}, trials, direction="max", top_k=2)
    widened = new["optim.mu"]
    assert [w["side"] for w in warnings] == ["high"]
    assert isinstance(widened, Range) and 0.99 < widened.high < 1.0


def test_no_complete_trial_keeps_the_ranges() -> None:
    ranges = {"optim.lr": _range("loguniform(1e-6, 1e1)")}
    assert next_stage(ranges, [], direction="max", top_k=5) == (ranges, [])
