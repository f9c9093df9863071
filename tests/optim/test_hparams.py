"""optim/hparams.py: the one table of defaults and ranges, and everything that reads it."""

from __future__ import annotations

import inspect
import math
import os
import re
import subprocess
import sys
import typing

import pytest
import torch
from torch import nn

from babysit.config import Config, load_config
from babysit.errors import ConfigError
from babysit.models import MODELS
from babysit.optim import rules
from babysit.optim.build import OPTIMIZERS, create_optimizer, optimizer
from babysit.optim.hparams import (
    HPARAMS,
    MOMENTUM_KEYS,
    RULE_HPARAMS,
    SCHEDULE_KINDS,
    HParam,
    Range,
    momentum_of,
    section,
)
from babysit.optim.schedules import SCHEDULE_KEYS, SCHEDULES, check_schedule, schedule


def test_config_and_the_table_import_without_torch() -> None:
    code = "import babysit.config, sys; assert 'torch' not in sys.modules, 'torch was imported'"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


# --- every range: the default is in, the boundaries and non-numbers are out -------------------


def _outside(hp: HParam) -> list[object]:
    """Values just outside hp's range, plus values no range holds."""
    r = hp.range
    out: list[object] = [math.nan, math.inf, -math.inf, True, "1", None if not hp.optional else "x"]
    if math.isfinite(r.low):
        out.append(r.low if not r.low_closed else math.nextafter(r.low, -math.inf))
    if math.isfinite(r.high):
        out.append(r.high if not r.high_closed else math.nextafter(r.high, math.inf))
    if r.integer:
        out.append(max(r.low, 0) + 1.5)
    return out


def _inside(hp: HParam) -> list[object]:
    """The default, and the closed boundaries or values just inside the open ones."""
    r = hp.range
    low = r.low if r.low_closed else math.nextafter(r.low, math.inf)
    values: list[object] = [hp.default, int(max(r.low, 1)) if r.integer else low]
    if math.isfinite(r.high) and not r.integer:
        values.append(r.high if r.high_closed else math.nextafter(r.high, -math.inf))
    return values


@pytest.mark.parametrize("key", list(HPARAMS))
def test_every_range_accepts_its_default_and_rejects_its_boundaries(key: str) -> None:
    hp = HPARAMS[key]
    for value in _inside(hp):
        assert hp.problem(value) is None, (key, value)
    for value in _outside(hp):
        reason = hp.problem(value)
        assert reason is not None, (key, value)
        assert reason.startswith(f"not {hp.range.text}; fix: set {key} to")


@pytest.mark.parametrize(
    ("interval", "text", "inside", "outside"),
    [
        ("(0, inf)", "a number > 0", [1e-300, 1e300], [0.0, -1.0, math.inf]),
        ("[0, 1)", "a number in [0, 1)", [0.0, 0.999], [1.0, -1e-12]),
        ("(0, 1]", "a number in (0, 1]", [1.0], [0.0, 1.0001]),
    ],
)
def test_range_of_an_interval(interval: str, text: str, inside: list, outside: list) -> None:
    r = Range.of(interval)
    assert r.text == text
    assert all(r.holds(v) for v in inside) and not any(r.holds(v) for v in outside)
    mask = r.holds(
        torch.tensor(inside + outside, dtype=torch.float64)
    )  # the same test, per element
    assert mask.tolist() == [True] * len(inside) + [False] * len(outside)


# --- config, rules.step and build agree on the same values ----------------------------------


@pytest.mark.parametrize("name", list(section("optim")))
def test_config_rules_step_and_create_optimizer_agree(name: str) -> None:
    hp = section("optim")[name]
    w = torch.zeros(3, dtype=torch.float64)
    base = {} if name == "lr" else {"lr": 0.1}
    numbers = [v for v in _outside(hp) if isinstance(v, float)]
    for value in numbers:
        with pytest.raises(ConfigError, match=f"optim.{name} = {re.escape(repr(value))} is inv"):
            load_config({"optim": {name: value}})
        with pytest.raises(ConfigError, match=f"{name}={re.escape(repr(value))} is not"):
            rules.step("sgd", w, w, {}, **base, **{name: value})
        with pytest.raises(ConfigError, match=f"{name}={re.escape(repr(value))} is not"):
            create_optimizer([nn.Parameter(w.clone())], "sgd", {**base, name: value})
        members = torch.tensor([float(hp.default or 0.1), value], dtype=torch.float64)
        pop = torch.zeros(2, 3, dtype=torch.float64)
        with pytest.raises(ConfigError, match=r"\(population member 1\)"):
            rules.step("sgd", pop, pop, {}, **base, **{name: members})
    for value in _inside(hp):
        assert getattr(load_config({"optim": {name: value}}).optim, name) == value
        rules.step("sgd", w, w, {}, **base, **{name: value})
        create_optimizer([nn.Parameter(w.clone())], "sgd", {**base, name: value})


@pytest.mark.parametrize("name", list(section("schedule")))
def test_config_and_check_schedule_agree(name: str) -> None:
    hp = section("schedule")[name]
    kind = next(k for k, keys in SCHEDULE_KEYS.items() if name in keys)
    for value in [v for v in _outside(hp) if isinstance(v, float)]:
        with pytest.raises(ConfigError, match=re.escape(hp.range.text)):
            load_config({"schedule": {name: value}})
        with pytest.raises(ConfigError, match=f"schedule.{name}={re.escape(repr(value))} is not"):
            check_schedule(kind, {name: value})
    for value in _inside(hp):
        load_config({"schedule": {name: value}})
        assert check_schedule(kind, {name: value})[name] == value


def test_the_same_bad_value_gets_the_same_reason_everywhere() -> None:
    with pytest.raises(ConfigError) as from_config:
        load_config({"optim": {"beta1": 1.0}})
    with pytest.raises(ConfigError) as from_step:
        rules.step(
            "adam",
            torch.zeros(2),
            torch.zeros(2),
            rules.init_state("adam", torch.zeros(2)),
            lr=1,
            beta1=1.0,
        )
    reason = "is not a number in (0, 1); fix: set beta1 to a number in (0, 1), e.g. 0.9"
    assert str(from_step.value).endswith(reason)
    assert "optim.beta1 = 1.0 is invalid: not a number in (0, 1); fix: set optim.beta1" in str(
        from_config.value
    )


# --- the config's fields, the builders' options and the registries read the table -----------


@pytest.mark.parametrize("key", [k for k in HPARAMS if not k.startswith("model.")])
def test_every_table_key_is_a_config_field_with_the_tables_default_and_type(key: str) -> None:
    hp = HPARAMS[key]
    model = Config.model_fields[hp.section].annotation
    assert isinstance(model, type)
    field = model.model_fields[hp.name]  # type: ignore[attr-defined]
    assert field.default == hp.default and type(field.default) in (hp.type, type(None))
    assert hp.type in (field.annotation, *typing.get_args(field.annotation))


def test_the_bundled_models_dropout_default_is_the_tables() -> None:
    for builder in MODELS.values():
        params = inspect.signature(builder).parameters
        if "dropout" in params:
            assert params["dropout"].default == HPARAMS["model.dropout"].default


def test_every_rule_and_kind_uses_only_table_hyperparameters_and_every_one_is_used() -> None:
    optim, sched = section("optim"), section("schedule")
    used = {name for spec in RULE_HPARAMS.values() for name in spec.hparams}
    assert used == set(optim)
    keys = {k for spec in SCHEDULE_KINDS.values() for k in spec.keys} | set(MOMENTUM_KEYS)
    assert keys == set(sched)
    for spec in RULE_HPARAMS.values():
        assert spec.momentum is None or spec.momentum in spec.hparams


def test_registries_hold_exactly_the_tables_names() -> None:
    assert set(OPTIMIZERS) == set(RULE_HPARAMS)
    assert set(rules.RULES) == {r for r, spec in RULE_HPARAMS.items() if not spec.full_batch}
    assert set(SCHEDULES) == {k for k, spec in SCHEDULE_KINDS.items() if not spec.stateful}
    assert {r: OPTIMIZERS[r].hparams for r in OPTIMIZERS} == {
        r: spec.hparams for r, spec in RULE_HPARAMS.items()
    }


def test_a_name_outside_the_table_cannot_be_registered() -> None:
    with pytest.raises(ConfigError, match="unknown update rule 'adamw'"):
        rules.rule("adamw")
    with pytest.raises(ConfigError, match="unknown update rule 'adamw'"):
        optimizer("adamw")
    with pytest.raises(ConfigError, match="unknown schedule 'cosine'"):
        schedule("cosine")
    with pytest.raises(TypeError, match="the table says"):
        schedule("exp")(lambda lr0, t, *, rate: lr0)


@pytest.mark.parametrize("rule", [r for r, s in RULE_HPARAMS.items() if s.momentum])
def test_where_momentum_lives_reaches_the_torch_param_group(rule: str) -> None:
    spec = OPTIMIZERS[rule]
    opt = create_optimizer(
        [nn.Parameter(torch.zeros(2))], rule, {"lr": 0.1, "mu": 0.8, "beta1": 0.7}
    )
    group = opt.param_groups[0]
    torch_value = group["betas"][0] if spec.momentum_key == "betas0" else group["momentum"]
    assert torch_value == momentum_of(rule, {"mu": 0.8, "beta1": 0.7})


# --- the search's default ranges ---------------------------------------------------------------

_DIST = re.compile(r"^(loguniform|uniform)\(([^,]+), ([^,]+)\)$|^choice\((.+)\)$")


@pytest.mark.parametrize("key", [k for k, hp in HPARAMS.items() if hp.search_default])
def test_search_defaults_are_distributions_inside_the_range(key: str) -> None:
    hp = HPARAMS[key]
    match = _DIST.match(hp.search_default or "")
    assert match, hp.search_default
    if match.group(4):
        values = [float(v) for v in match.group(4).split(",")]
        assert all(hp.range.holds(v) for v in values) and hp.default in values
    else:
        low, high = float(match.group(2)), float(match.group(3))
        assert hp.range.holds(low) and low < high <= hp.range.high
        assert match.group(1) == "uniform" or low > 0  # a log scale needs low > 0


def test_the_notes_search_ranges() -> None:
    lr, reg = HPARAMS["optim.lr"].search_default, HPARAMS["train.reg"].search_default
    assert lr == reg == "loguniform(1e-6, 1e1)"
    assert HPARAMS["model.dropout"].search_default == "uniform(0, 1)"
    assert HPARAMS["optim.mu"].search_default == "choice(0.5, 0.9, 0.95, 0.99)"
