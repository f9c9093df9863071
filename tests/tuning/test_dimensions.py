"""Distribution strings: every kind parses, writes itself back, matches Optuna's distribution."""

from __future__ import annotations

import warnings

import numpy as np
import optuna
import pytest

from babysit.tuning.dimensions import KINDS, Choice, Limits, Range, narrow, parse_dimension

EXAMPLES = {
    "loguniform": "loguniform(1e-6, 1e1)",
    "uniform": "uniform(0, 1)",
    "intuniform": "intuniform(16, 256)",
    "choice": "choice(relu, 'tanh', [64, 64], 0.5)",
}


def test_every_kind_has_an_example() -> None:
    assert set(KINDS) == set(EXAMPLES)


@pytest.mark.parametrize("kind", list(KINDS))
def test_kind_round_trips_through_its_text(kind: str) -> None:
    dim = parse_dimension(EXAMPLES[kind])
    assert dim.kind == kind
    assert parse_dimension(str(dim)) == dim


@pytest.mark.parametrize("kind", list(KINDS))
def test_an_enqueued_sample_comes_back_from_suggest(kind: str) -> None:
    dim = parse_dimension(EXAMPLES[kind])
    study = optuna.create_study()
    rng = np.random.default_rng(0)
    for _ in range(30):
        value = dim.sample(rng)
        study.enqueue_trial({"x": value})
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # Optuna warns when a fixed value is out of range
            assert dim.suggest(study.ask(), "x") == value


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_sampled_suggestion_lies_in_the_dimension(kind: str) -> None:
    dim = parse_dimension(EXAMPLES[kind])
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(30):
        value = dim.decode(dim.suggest(study.ask(), "x"))
        if isinstance(dim, Range):
            assert dim.low <= value <= dim.high
        else:
            assert value in dim.choices


def test_narrow_reads_a_stage_range_back_with_the_limits_and_universe() -> None:
    lr = Range("loguniform", 1e-6, 10.0, log=True, limits=Limits(0.0, None, low_open=True))
    narrowed = narrow(lr, str(Range("loguniform", 1e-4, 0.01, log=True)))
    assert (narrowed.low, narrowed.high, narrowed.limits) == (1e-4, 0.01, lr.limits)
    mu = parse_dimension("choice(0.5, 0.9, 0.95, 0.99)")
    kept = narrow(mu, "choice(0.9, 0.95)")
    assert isinstance(kept, Choice) and kept.choices == (0.9, 0.95)
    assert kept.universe == (0.5, 0.9, 0.95, 0.99)
    with pytest.raises(ValueError, match="same kind"):
        narrow(lr, "uniform(0, 1)")


def test_log_range_positions_are_in_log_space() -> None:
    dim = parse_dimension("loguniform(1e-6, 1e1)")
    assert isinstance(dim, Range) and dim.log
    assert dim.to_unit(1e-6) == 0.0 and dim.to_unit(1e1) == pytest.approx(1.0)
    assert dim.to_unit(1e-3) == pytest.approx(3 / 7)
    assert dim.from_unit(3 / 7) == pytest.approx(1e-3)


def test_int_range_gives_ints_and_uniform_covers_both_ends() -> None:
    dim = parse_dimension("intuniform(1, 3)")
    values = {dim.sample(np.random.default_rng(s)) for s in range(50)}
    assert values == {1, 2, 3} and all(isinstance(v, int) for v in values)


def test_choice_of_lists_is_stored_as_text_and_decoded_back() -> None:
    dim = parse_dimension("choice([64], [128, 128])")
    assert isinstance(dim, Choice)
    stored = dim.sample(np.random.default_rng(0))
    assert isinstance(stored, str) and dim.decode(stored) in ([64], [128, 128])


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("loguniform(1e-6", "expected a distribution"),
        ("lognormal(1, 2)", "unknown distribution 'lognormal'; did you mean 'loguniform'"),
        ("uniform(1, 1)", "low 1 must be below high 1"),
        ("loguniform(1e-2, 1e-4)", "write loguniform(0.0001, 0.01)"),
        ("loguniform(0, 1)", "a log range needs low > 0"),
        ("intuniform(1.5, 4)", "intuniform takes two whole numbers"),
        ("uniform(1)", "uniform takes two finite numbers"),
        ("choice()", "choice() is empty"),
        ("choice(1, 1)", "lists a value twice"),
        ("uniform(1, 2 +)", "cannot read the arguments"),
    ],
)
def test_bad_text_says_why_and_how_to_fix_it(text: str, needle: str) -> None:
    with pytest.raises(ValueError, match=None) as info:
        parse_dimension(text)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_limits_clip_stops_halfway_before_an_open_limit() -> None:
    mu = Limits(0.0, 1.0, high_open=True)
    assert mu.clip(1.2, inner=0.99) == pytest.approx(0.995)
    assert Limits(0.0, 1.0).clip(1.2, inner=0.99) == 1.0
    assert mu.clip(0.5, inner=0.99) == 0.5
