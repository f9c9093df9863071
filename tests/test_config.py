"""Config loading, overrides and the one-line errors for bad values."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from babysit.config import BUNDLED_TASKS, RULE_NAMES, SCHEDULE_NAMES, Config, load_config
from babysit.errors import ConfigError


def test_defaults_are_written_out_and_read_back(tmp_path: Path) -> None:
    cfg = load_config({"model": {"hidden": [10, 20]}})
    path = tmp_path / "c.toml"
    path.write_text(cfg.to_toml())
    data = tomllib.loads(path.read_text())
    assert data["optim"]["beta2"] == 0.999 and data["train"]["epochs"] == 10
    assert data["model"]["hidden"] == [10, 20]
    assert load_config(path) == cfg


def test_overrides_parse_toml_values_and_bare_words() -> None:
    cfg = load_config(
        None, ["optim.lr=1e-2", "optim.rule=sgd", "model.hidden=[5, 6]", "train.seed=3"]
    )
    assert cfg.optim.lr == 0.01 and cfg.optim.rule == "sgd"
    assert cfg.model_table() == {"hidden": [5, 6]} and cfg.train.seed == 3


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"train": {"epoch": 3}}, "unknown key 'train.epoch': did you mean 'epochs'"),
        ({"optim": {"lr": -1.0}}, "optim.lr = -1.0 is invalid"),
        ({"optim": {"lr": 0}}, "optim.lr = 0 is invalid"),
        ({"train": {"batch_size": 0}}, "train.batch_size = 0"),
        ({"train": {"epochs": 0}}, "train.epochs = 0"),
        ({"train": {"reg": -1e-3}}, "train.reg = -0.001"),
        ({"optim": {"rule": "adamw"}}, "optim.rule = 'adamw'"),
        ({"optim": {"beta1": 1.0}}, "optim.beta1 = 1.0"),
        ({"schedule": {"kind": "cosine"}}, "schedule.kind = 'cosine'"),
        ({"train": {"batch_size": "big"}}, "train.batch_size = 'big'"),
        ({"task": {"name": "digitz-mlp"}}, "did you mean 'digits-mlp'"),
        ({"nonsense": {}}, "unknown key 'nonsense'"),
        ({"train": {"ema": 1.0}}, "train.ema = 1.0 is invalid: not a number in [0, 1)"),
        ({"train": {"ema": -0.5}}, "train.ema = -0.5 is invalid"),
        ({"train": {"ema": 0.99, "swa": True}}, "train.swa = True is invalid: train.ema = 0.99"),
        (
            {"train": {"swa": True, "swa_start": 10}},
            "train.swa_start = 10.0 is invalid: not below train.epochs = 10",
        ),
        ({"train": {"swa": True, "swa_start": -1}}, "train.swa_start = -1 is invalid"),
        ({"train": {"swa_lr": 0}}, "train.swa_lr = 0 is invalid: not a number > 0"),
    ],
)
def test_bad_values_raise_one_line_config_error(data: dict, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(data)
    assert needle in str(err.value)
    assert "\n" not in str(err.value)


def test_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[optim]\nlr = -3\n")
    with pytest.raises(ConfigError, match=r"bad\.toml: optim\.lr = -3"):
        load_config(path)
    path.write_text("[optim\nlr = 1")
    with pytest.raises(ConfigError, match="TOML syntax error"):
        load_config(path)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.toml")


def test_set_needs_key_equals_value() -> None:
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_config(None, ["optim.lr"])


def test_names_match_the_registries() -> None:
    from babysit.optim.build import OPTIMIZERS
    from babysit.optim.schedules import SCHEDULES
    from babysit.tasks import TASKS

    assert set(BUNDLED_TASKS) == set(TASKS)
    assert set(RULE_NAMES) == set(OPTIMIZERS)
    assert set(SCHEDULE_NAMES) - {"plateau"} <= set(SCHEDULES)


def test_model_table_takes_any_keys() -> None:
    cfg = Config.from_dict({"model": {"anything": 1, "width": [3]}})
    assert cfg.model_table() == {"anything": 1, "width": [3]}
