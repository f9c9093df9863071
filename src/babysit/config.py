"""Typed run config: TOML in, `--set key=value` overrides, every default written back out.

This module does not import torch, so a bad config is answered before torch loads.
Every problem raises :class:`~babysit.errors.ConfigError` with one line naming the
file, the dotted key, the value and the reason.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import tomli_w
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from babysit.errors import ConfigError
from babysit.tuning.space import DEFAULT_SPACE, SEARCH_DEFAULTS, SpaceError, parse_space

__all__ = [
    "BUNDLED_TASKS",
    "PRUNER_NAMES",
    "RULE_NAMES",
    "SAMPLER_NAMES",
    "SCHEDULE_NAMES",
    "Config",
    "SearchConfig",
    "load_config",
    "parse_override",
]

# Names the config accepts; the registries in tasks.py / optim/build.py / optim/schedules.py
# are checked against these by the tests, so the two cannot drift apart.
BUNDLED_TASKS = ("digits-softmax", "digits-mlp", "digits-convnet", "spiral-mlp", "cifar10-convnet")
RULE_NAMES = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "lbfgs")
SCHEDULE_NAMES = ("none", "step", "exp", "inv", "plateau")
SAMPLER_NAMES = ("random", "tpe", "gp")  # tuning/study.py SAMPLERS
PRUNER_NAMES = ("none", "median", "sh", "hyperband")  # tuning/study.py PRUNERS


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class TaskConfig(_Section):
    name: str = "digits-mlp"  # bundled name, "pkg.module:fn" or "path/to/file.py:fn"
    data_dir: str | None = None  # cifar10: the local cifar-10-batches-py folder
    options: dict[str, Any] = Field(default_factory=dict)  # keyword arguments for a user's fn

    @field_validator("name")
    @classmethod
    def _known_task(cls, name: str) -> str:
        if ":" not in name and name not in BUNDLED_TASKS:
            close = difflib.get_close_matches(name, BUNDLED_TASKS, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ValueError(
                f"unknown task: {hint}use one of {', '.join(BUNDLED_TASKS)} "
                "or 'pkg.module:function' / 'path/to/file.py:function'"
            )
        return name


class ModelConfig(BaseModel):
    """The [model] table: any keys, passed as a dict to the task's model factory."""

    model_config = ConfigDict(extra="allow")


class OptimConfig(_Section):
    rule: Literal["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "lbfgs"] = "adam"
    lr: float = Field(1e-3, gt=0)
    mu: float = Field(0.9, ge=0, lt=1)  # momentum / nesterov; the notes: 0.5, 0.9, 0.95, 0.99
    decay_rate: float = Field(0.99, gt=0, lt=1)  # rmsprop; the notes: 0.9, 0.99, 0.999
    eps: float = Field(1e-8, gt=0)
    beta1: float = Field(0.9, gt=0, lt=1)
    beta2: float = Field(0.999, gt=0, lt=1)


class ScheduleConfig(_Section):
    kind: Literal["none", "step", "exp", "inv", "plateau"] = "none"
    every: float = Field(5.0, gt=0)  # step: epochs between decays (the notes: half every 5)
    factor: float = Field(0.5, gt=0, lt=1)  # step / plateau: multiply the lr by this
    k: float = Field(0.1, ge=0)  # exp: lr0 * exp(-k t); inv: lr0 / (1 + k t), t in epochs
    patience: int = Field(3, ge=1)  # plateau: epochs without improvement before a decay
    threshold: float = Field(1e-4, ge=0)  # plateau: smallest change that counts as improvement
    min_lr: float = Field(0.0, ge=0)
    mu_start: float | None = Field(None, ge=0, lt=1)  # momentum schedule, e.g. 0.5 -> optim.mu
    mu_epochs: float = Field(0.0, ge=0)  # over this many epochs


class TrainConfig(_Section):
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(64, ge=1)
    reg: float = Field(1e-4, ge=0)  # L2 strength: loss = data loss + reg * sum(w**2)
    seed: int = 0
    clip_grad: float | None = Field(None, gt=0)  # max global gradient norm
    early_stop: int | None = Field(None, ge=1)  # patience in epochs on the validation metric
    eval_batch_size: int = Field(1024, ge=1)
    keep_best: int = Field(1, ge=0)  # checkpoints kept by validation metric
    keep_last: int = Field(1, ge=1)  # most recent checkpoints kept (resume needs one)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    monitor_every: int = Field(50, ge=1)  # steps between probe capture windows (babysit.watch)
    sanity: bool = False  # run the sanity checks before training
    gradcheck: bool = False  # run the gradient check before training
    report: bool = True  # write report.html at the end


class StageConfig(_Section):
    """One ``[[search.stage]]``: the notes' coarse -> fine, e.g. 1 epoch x 50 trials."""

    epochs: float = Field(1.0, gt=0)  # may be fractional: "1 epoch or even less"
    trials: int = Field(50, ge=1)


class SearchConfig(_Section):
    """``[search]``: what ``babysit.search`` tries; ``space`` is checked by tuning/space.py."""

    sampler: Literal["random", "tpe", "gp"] = "random"  # the notes: random search
    seed: int = Field(0, ge=0)  # seeds the sampler (the trials' training uses train.seed)
    # dotted config key -> distribution, e.g. "optim.lr" = "loguniform(1e-6, 1e1)"
    space: dict[str, str] = Field(
        default_factory=lambda: {key: SEARCH_DEFAULTS[key] for key in DEFAULT_SPACE}
    )
    stage: list[StageConfig] = Field(default_factory=lambda: [StageConfig()], min_length=1)
    pruner: Literal["none", "median", "sh", "hyperband"] = "none"  # stops hopeless trials
    top_k: int = Field(5, ge=1)  # best trials a stage zooms around and border-checks
    direction: Literal["max", "min"] | None = None  # None: the task's (a user objective: max)
    storage: str | None = None  # None: journal.log in the study dir; sqlite:/// | postgresql://


class Config(_Section):
    task: TaskConfig = Field(default_factory=TaskConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    search: SearchConfig = Field(default_factory=SearchConfig)

    @model_validator(mode="after")
    def _check_search_space(self) -> Config:
        """Space keys name config keys, values parse and lie in the keys' limits."""
        try:
            parse_space(self)
        except SpaceError as exc:
            line = InitErrorDetails(
                type=PydanticCustomError("search_space", "{reason}", {"reason": exc.reason}),
                loc=("search", "space", exc.key),
                input=exc.text,
            )
            raise ValidationError.from_exception_data("Config", [line]) from None
        return self

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "<dict>") -> Config:
        """Validate a nested dict; errors name ``source`` and the dotted key."""
        try:
            return cls.model_validate(dict(data))
        except ValidationError as exc:
            raise _config_error(exc, source) from None

    def to_dict(self) -> dict[str, Any]:
        """Every value, defaults included; None values dropped (TOML has no null)."""
        return _drop_none(self.model_dump(mode="python"))

    def to_toml(self) -> str:
        return tomli_w.dumps(self.to_dict())

    def model_table(self) -> dict[str, Any]:
        return dict(self.model.model_extra or {})


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    return value


def _config_error(exc: ValidationError, source: str) -> ConfigError:
    err = exc.errors()[0]
    key = ".".join(str(p) for p in err["loc"])
    more = f" (and {exc.error_count() - 1} more problem(s))" if exc.error_count() > 1 else ""
    if err["type"] == "extra_forbidden":
        section = _section_model(err["loc"][:-1])
        allowed = list(section.model_fields) if section else []
        close = difflib.get_close_matches(str(err["loc"][-1]), allowed, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return ConfigError(
            f"{source}: unknown key {key!r}: {hint}allowed keys here: {', '.join(allowed)}{more}"
        )
    value = err.get("input")
    reason = err["msg"].removeprefix("Value error, ")
    return ConfigError(f"{source}: {key} = {value!r} is invalid: {reason}{more}")


def _section_model(loc: Iterable[Any]) -> type[BaseModel] | None:
    model: type[BaseModel] | None = Config
    for part in loc:
        if model is None:
            return None
        field = model.model_fields.get(str(part))
        annotation = field.annotation if field else None
        model = (
            annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel)
            else None
        )
    return model


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"optim.lr=1e-2"`` -> (["optim", "lr"], 0.01); the value is read as TOML, else a string."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(
            f"--set {text!r}: expected KEY=VALUE with a dotted key, e.g. optim.lr=1e-3"
        )
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()  # a bare word such as adam
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Set each dotted ``KEY=VALUE`` into a nested dict (a copy)."""
    out: dict[str, Any] = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for text in overrides:
        path, value = parse_override(text)
        node = out
        for part in path[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
            node[part] = child = dict(child)
            node = child
        node[path[-1]] = value
    return out


def load_config(
    source: str | os.PathLike[str] | Mapping[str, Any] | Config | None = None,
    overrides: Iterable[str] = (),
) -> Config:
    """Load a config from a TOML path, a dict or a Config, then apply ``--set`` overrides."""
    overrides = list(overrides)
    if isinstance(source, Config):
        if not overrides:
            return source
        data, name = source.to_dict(), "<config>"
    elif source is None:
        data, name = {}, "<defaults>"
    elif isinstance(source, Mapping):
        data, name = dict(source), "<dict>"
    else:
        path = Path(source)
        name = str(path)
        if not path.exists():
            raise ConfigError(f"{name}: config file not found (give the path to a .toml file)")
        if path.is_dir():
            raise ConfigError(f"{name}: is a directory, expected a .toml config file")
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{name}: TOML syntax error: {exc}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{name}: cannot read the file: {exc}") from None
    if overrides:
        data = apply_overrides(data, overrides)
        name += " (with --set)"
    return Config.from_dict(data, source=name)
