"""babysit.optim.schedules against the notes' numbers and torch's ReduceLROnPlateau."""

from __future__ import annotations

import inspect
import io
import itertools
import math

import pytest
import torch

from babysit.errors import ConfigError
from babysit.optim.schedules import (
    MOMENTUM_KEYS,
    SCHEDULE_DEFAULTS,
    SCHEDULE_KEYS,
    SCHEDULES,
    Plateau,
    check_schedule,
    momentum_at,
)


def test_step_decay_halves_every_5_epochs_as_in_the_notes() -> None:
    lr = [SCHEDULES["step"](0.1, t, every=5, factor=0.5) for t in (0, 4.99, 5, 9.99, 10, 23)]
    assert lr == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025, 0.00625], rel=1e-12)


def test_step_decay_by_0_1_every_20_epochs_as_in_the_notes() -> None:
    lr = [SCHEDULES["step"](1.0, t, every=20, factor=0.1) for t in (19.5, 20, 40)]
    assert lr == pytest.approx([1.0, 0.1, 0.01], rel=1e-12)


def test_exponential_decay_with_k_ln2_halves_every_epoch() -> None:
    k = math.log(2)
    assert [SCHEDULES["exp"](0.8, t, k=k) for t in (0, 1, 3, 0.5)] == pytest.approx(
        [0.8, 0.4, 0.1, 0.8 / math.sqrt(2)], rel=1e-12
    )


def test_inverse_time_decay_with_k_1() -> None:
    assert [SCHEDULES["inv"](0.6, t, k=1.0) for t in (0, 1, 2, 5)] == pytest.approx(
        [0.6, 0.3, 0.2, 0.1], rel=1e-12
    )


def test_none_keeps_lr0() -> None:
    assert {SCHEDULES["none"](3e-4, t) for t in (0, 1.5, 100)} == {3e-4}


# --- contract: every registered schedule ---------------------------------------------------


@pytest.mark.parametrize("kind", sorted(SCHEDULES))
def test_schedule_starts_at_lr0_and_never_increases(kind: str) -> None:
    keys = {k: SCHEDULE_DEFAULTS[k] for k in SCHEDULE_KEYS[kind] if k not in MOMENTUM_KEYS}
    lrs = [SCHEDULES[kind](0.1, t / 4, **keys) for t in range(200)]
    assert lrs[0] == 0.1
    assert all(b <= a for a, b in itertools.pairwise(lrs)) and lrs[-1] > 0


@pytest.mark.parametrize("kind", sorted(SCHEDULES))
def test_schedule_keys_are_exactly_the_functions_keyword_arguments(kind: str) -> None:
    params = inspect.signature(SCHEDULES[kind]).parameters.values()
    kw = {p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}
    assert set(SCHEDULE_KEYS[kind]) == kw | set(MOMENTUM_KEYS)


def test_every_kind_has_checks_and_defaults_for_its_keys() -> None:
    assert set(SCHEDULE_KEYS) == {"none", "step", "exp", "inv", "plateau"}
    for kind in SCHEDULE_KEYS:
        assert check_schedule(kind, {}) == {k: SCHEDULE_DEFAULTS[k] for k in SCHEDULE_KEYS[kind]}


# --- momentum schedule ---------------------------------------------------------------------


def test_momentum_ramps_linearly_from_0_5_to_0_99_as_in_the_notes() -> None:
    mus = [momentum_at(t, mu=0.99, mu_start=0.5, mu_epochs=10) for t in (0, 2.5, 5, 10, 30)]
    assert mus == pytest.approx([0.5, 0.6225, 0.745, 0.99, 0.99], rel=1e-12)


def test_momentum_without_a_ramp_is_constant() -> None:
    assert momentum_at(0.0, mu=0.9, mu_start=None, mu_epochs=10) == 0.9
    assert momentum_at(0.0, mu=0.9, mu_start=0.5, mu_epochs=0) == 0.9


# --- plateau -------------------------------------------------------------------------------

METRICS = [0.50, 0.60, 0.61, 0.61, 0.60, 0.605, 0.60, 0.62, 0.62, 0.62, 0.62, 0.62, 0.63]
METRICS += [0.63] * 12 + [math.nan, 0.70, 0.70]


@pytest.mark.parametrize("mode", ["max", "min"])
@pytest.mark.parametrize(("patience", "threshold"), [(3, 1e-4), (1, 0.0), (2, 0.015)])
def test_plateau_matches_torch_reduce_lr_on_plateau(
    mode: str, patience: int, threshold: float
) -> None:
    metrics = METRICS if mode == "max" else [-m for m in METRICS]
    ours = Plateau(0.1, factor=0.5, patience=patience, threshold=threshold, min_lr=0.004)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    theirs = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, mode=mode, factor=0.5, patience=patience, threshold=threshold,
        threshold_mode="abs", min_lr=0.004,
    )  # fmt: skip
    got, want = [], []
    for m in metrics:
        got.append(ours.update(m, mode=mode))
        theirs.step(m)
        want.append(opt.param_groups[0]["lr"])
    assert len(set(want)) >= 3  # the sequence really reduces, more than once
    assert got == pytest.approx(want, rel=1e-12)


def test_plateau_reduces_only_after_patience_epochs_without_improvement() -> None:
    p = Plateau(1.0, factor=0.5, patience=3, threshold=1e-4)
    lrs = [p.update(m, mode="max") for m in (0.9, 0.9, 0.9, 0.9, 0.9, 0.95, 0.95)]
    assert lrs == [1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5]


def test_plateau_state_round_trips_through_a_weights_only_checkpoint() -> None:
    straight = Plateau(0.1, patience=2)
    expected = [straight.update(m, mode="max") for m in METRICS]
    first = Plateau(0.1, patience=2)
    got = [first.update(m, mode="max") for m in METRICS[:9]]
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)
    buf.seek(0)
    second = Plateau(0.1, patience=2)
    second.load_state_dict(torch.load(buf, weights_only=True))
    got += [second.update(m, mode="max") for m in METRICS[9:]]
    assert got == expected


# --- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "keys", "named"),
    [
        ("step", {"factor": 0.0}, "factor=0.0"),
        ("step", {"factor": 1.0}, "factor=1.0"),
        ("plateau", {"factor": 1.5}, "factor=1.5"),
        ("step", {"every": 0}, "every=0"),
        ("exp", {"k": -0.1}, "k=-0.1"),
        ("inv", {"k": math.inf}, "k=inf"),
        ("plateau", {"patience": 0}, "patience=0"),
        ("plateau", {"patience": 2.5}, "patience=2.5"),
        ("none", {"mu_start": 1.0}, "mu_start=1.0"),
        ("step", {"mu_epochs": -1}, "mu_epochs=-1"),
    ],
)
def test_bad_schedule_value_raises_config_error_naming_it(
    kind: str, keys: dict, named: str
) -> None:
    with pytest.raises(ConfigError, match=f"schedule.{named} "):
        check_schedule(kind, keys)


def test_unknown_schedule_names_the_allowed_kinds() -> None:
    with pytest.raises(ConfigError, match=r"'cosine'.*none, step, exp, inv, plateau"):
        check_schedule("cosine", {})


def test_plateau_refuses_bad_values_and_modes() -> None:
    with pytest.raises(ConfigError, match="patience=0"):
        Plateau(0.1, patience=0)
    with pytest.raises(ConfigError, match="'up'"):
        Plateau(0.1).update(0.5, mode="up")
