"""[search] config: spaces checked against the Config at load, one line per problem."""

from __future__ import annotations

import sys
import typing

import pytest

from babysit.config import PRUNER_NAMES, SAMPLER_NAMES, Config, SearchConfig, load_config
from babysit.errors import ConfigError
from babysit.tuning.space import DEFAULT_SPACE, SEARCH_DEFAULTS, parse_space
from babysit.tuning.study import PRUNERS, SAMPLERS


def _space(space: dict[str, str]) -> Config:
    return load_config({"search": {"space": space}})


def test_names_in_the_config_match_the_registries() -> None:
    fields = SearchConfig.model_fields
    assert SAMPLER_NAMES == tuple(SAMPLERS) == typing.get_args(fields["sampler"].annotation)
    assert PRUNER_NAMES == tuple(PRUNERS) == typing.get_args(fields["pruner"].annotation)


def test_default_space_is_the_notes_lr_and_reg_on_log_scale() -> None:
    space = parse_space(load_config({}))
    assert list(space) == list(DEFAULT_SPACE) == ["optim.lr", "train.reg"]
    assert [str(d) for d in space.values()] == ["loguniform(1e-06, 10.0)"] * 2


@pytest.mark.parametrize("key", list(SEARCH_DEFAULTS))
def test_default_word_picks_the_notes_range(key: str) -> None:
    dim = parse_space(_space({key: "default"}))[key]
    assert str(dim).replace(" ", "") == str(
        parse_space(_space({key: SEARCH_DEFAULTS[key]}))[key]
    ).replace(" ", "")


def test_float_ranges_are_half_open_so_high_may_be_an_open_limit() -> None:
    mu = parse_space(_space({"optim.mu": "uniform(0.5, 1)"}))["optim.mu"]
    assert mu.decode(1.0) < 1.0 and mu.decode(0.7) == 0.7  # a sampler's 1.0 moves inside


def test_keys_of_every_searchable_section_are_accepted() -> None:
    space = {
        "optim.lr": "loguniform(1e-5, 1e-1)",
        "optim.mu": "choice(0.5, 0.9, 0.95, 0.99)",
        "optim.rule": "choice(sgd, adam)",
        "train.reg": "loguniform(1e-6, 1e1)",
        "train.batch_size": "intuniform(16, 256)",
        "schedule.factor": "uniform(0.1, 0.9)",
        "model.dropout": "uniform(0, 1)",
        "model.hidden": "choice([64], [128, 128])",
        "model.anything": "uniform(-3, 3)",  # [model] takes any keys
    }
    dims = parse_space(_space(space))
    assert list(dims) == list(space)


@pytest.mark.parametrize(
    ("space", "needle"),
    [
        ({"optim.lr": "loguniform(1e-6"}, "expected a distribution"),
        ({"optim.lr": "loguniform(1e-2, 1e-4)"}, "low 0.01 must be below high 0.0001"),
        ({"optim.lr": "loguniform(0, 1)"}, "a log range needs low > 0"),
        ({"optim.lrr": "loguniform(1e-6, 1)"}, "did you mean 'optim.lr'"),
        ({"lr": "loguniform(1e-6, 1)"}, "'lr' is not a config key"),
        ({"task.name": "choice(digits-mlp)"}, "'task.name' is not a config key"),
        ({"train.epochs": "intuniform(1, 5)"}, "set by each [[search.stage]]"),
        ({"optim.lr": "uniform(0, 1)"}, "0 is not a valid optim.lr"),
        ({"optim.mu": "uniform(0.5, 1.5)"}, "1.5 is not a valid optim.mu"),
        ({"train.batch_size": "uniform(16, 256)"}, "takes whole numbers: use intuniform"),
        ({"optim.rule": "choice(adam, sgdd)"}, "'sgdd' is not a valid optim.rule"),
        ({"model.dropout": "uniform(0, 1.5)"}, "1.5 is not a valid model.dropout"),
        ({"optim.eps": "default"}, "no default range for optim.eps"),
    ],
)
def test_bad_space_is_one_line_naming_key_value_and_reason(
    space: dict[str, str], needle: str
) -> None:
    key, text = next(iter(space.items()))
    with pytest.raises(ConfigError) as info:
        _space(space)
    message = str(info.value)
    assert needle in message and "\n" not in message
    assert f"search.space.{key} = {text!r}" in message


@pytest.mark.parametrize(
    ("search", "needle"),
    [
        ({"stage": [{"epochs": 1, "trials": 0}]}, "search.stage.0.trials = 0"),
        ({"stage": [{"epochs": 0, "trials": 5}]}, "search.stage.0.epochs = 0"),
        ({"stage": []}, "search.stage = []"),
        ({"sampler": "bayes"}, "search.sampler = 'bayes'"),
        ({"pruner": "asha"}, "search.pruner = 'asha'"),
        ({"top_k": 0}, "search.top_k = 0"),
    ],
)
def test_bad_search_keys_are_one_line(search: dict[str, object], needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config({"search": search})
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_fractional_stage_epochs_are_allowed_and_written_back(tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = load_config(
        {"search": {"stage": [{"epochs": 0.5, "trials": 100}, {"epochs": 5, "trials": 30}]}}
    )
    path = tmp_path / "c.toml"
    path.write_text(cfg.to_toml())
    again = load_config(path)
    assert again == cfg and again.search.stage[0].epochs == 0.5


def test_config_load_imports_neither_torch_nor_optuna() -> None:
    import subprocess

    code = (
        "import sys; from babysit.config import load_config; "
        "load_config({'search': {'space': {'optim.lr': 'loguniform(1e-6, 1)'}}}); "
        "print('torch' in sys.modules, 'optuna' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
