"""Typed run config: TOML in, `--set key=value` overrides, every default written back out.

This module does not import torch, so a bad config is answered before torch loads: the
hyperparameters' defaults and ranges come from ``optim/hparams.py`` and the task names from
``tasks.py``'s registry (both torch-free). Every problem raises
:class:`~babysit.errors.ConfigError` with one line naming the file, the dotted key, the
value, the reason and the fix.

Types are strict (``epochs = true`` or ``seed = "1"`` is refused, an int stands for a float),
and the file itself is read as untrusted: at most ``MAX_CONFIG_BYTES`` of it (a config
pointed at /dev/zero), nested at most ``MAX_DEPTH`` deep, never an empty file.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

import tomli_w
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails, InitErrorDetails, PydanticCustomError

from babysit._toml_input import MAX_CONFIG_BYTES, MAX_DEPTH, TOO_DEEP, check_depth, read_toml
from babysit.errors import ConfigError
from babysit.optim.hparams import (
    HPARAMS,
    RULE_DEFAULT,
    RULE_HPARAMS,
    SCHEDULE_DEFAULT,
    SCHEDULE_KINDS,
    key_problem,
)
from babysit.tasks import TASKS, check_task_name
from babysit.tuning.space import DEFAULT_SPACE, SEARCH_DEFAULTS, SpaceError, parse_space

__all__ = [
    "BUNDLED_TASKS",
    "MAX_CONFIG_BYTES",
    "MAX_DEPTH",
    "PRUNER_NAMES",
    "RULE_NAMES",
    "SAMPLER_NAMES",
    "SCHEDULE_NAMES",
    "Config",
    "GradcheckConfig",
    "SearchConfig",
    "differing_keys",
    "load_config",
    "parse_override",
]

# The names the config accepts, read from their one home (all torch-free): the task registry
# in tasks.py, the rule and schedule tables in optim/hparams.py.
BUNDLED_TASKS = tuple(TASKS)
RULE_NAMES = tuple(RULE_HPARAMS)
SCHEDULE_NAMES = tuple(SCHEDULE_KINDS)
SAMPLER_NAMES = ("random", "tpe", "gp")  # tuning/study.py SAMPLERS
PRUNER_NAMES = ("none", "median", "sh", "hyperband")  # tuning/study.py PRUNERS
SEED_LIMIT = 2**63  # torch seeds are 64-bit, and the checks seed with train.seed + 1


def _default(key: str, **field: Any) -> Any:
    """The Field of a hyperparameter: its default and reason from optim/hparams.py."""
    hp = HPARAMS[key]
    return Field(hp.default, description=hp.why, **field)


class _Section(BaseModel):
    """A config table; a key of optim/hparams.py is checked against its range or names there."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, strict=True)
    section: ClassVar[str] = ""

    def __setattr__(self, name: str, value: Any) -> None:
        """``cfg.optim.lr = math.inf`` raises ConfigError (one line), as a file's value would."""
        try:
            super().__setattr__(name, value)
        except ValidationError as exc:
            where = f"{self.section}.{name}" if self.section else name
            raise _config_error(exc, f"setting {where} in Python") from None

    @field_validator("*")
    @classmethod
    def _check(cls, value: Any, info: ValidationInfo) -> Any:
        reason = key_problem(f"{cls.section}.{info.field_name}", value)
        if reason is not None:
            raise ValueError(reason)
        return value


class TaskConfig(_Section):
    name: str = "digits-mlp"  # bundled name, "pkg.module:fn" or "path/to/file.py:fn"
    data_dir: str | None = None  # cifar10: the local cifar-10-batches-py folder
    options: dict[str, Any] = Field(default_factory=dict)  # keyword arguments for a user's fn

    @field_validator("name")
    @classmethod
    def _known_task(cls, name: str) -> str:
        return check_task_name(name)


class ModelConfig(BaseModel):
    """The [model] table: any keys, passed as a dict to the task's model factory."""

    model_config = ConfigDict(extra="allow")


class OptimConfig(_Section):
    """The update rule and its hyperparameters (defaults and ranges: optim/hparams.py)."""

    section: ClassVar[str] = "optim"
    rule: str = RULE_DEFAULT
    lr: float = _default("optim.lr")
    mu: float = _default("optim.mu")
    decay_rate: float = _default("optim.decay_rate")
    eps: float = _default("optim.eps")
    beta1: float = _default("optim.beta1")
    beta2: float = _default("optim.beta2")


class ScheduleConfig(_Section):
    """The lr (and momentum) schedule: the kind and every kind's keys (optim/hparams.py)."""

    section: ClassVar[str] = "schedule"
    kind: str = SCHEDULE_DEFAULT
    every: float = _default("schedule.every")
    factor: float = _default("schedule.factor")
    k: float = _default("schedule.k")
    patience: int = _default("schedule.patience")
    threshold: float = _default("schedule.threshold")
    min_lr: float = _default("schedule.min_lr")
    mu_start: float | None = _default("schedule.mu_start")
    mu_epochs: float = _default("schedule.mu_epochs")


class TrainConfig(_Section):
    """How to train; the numbers' defaults and ranges are in optim/hparams.py."""

    section: ClassVar[str] = "train"
    epochs: float = _default("train.epochs", validate_default=True)  # 0.5: half an epoch
    batch_size: int = _default("train.batch_size")
    reg: float = _default("train.reg")
    seed: int = 0  # in [0, 2**63)
    clip_grad: float | None = _default("train.clip_grad")
    early_stop: int | None = _default("train.early_stop")
    eval_batch_size: int = _default("train.eval_batch_size")
    keep_best: int = _default("train.keep_best")
    keep_last: int = _default("train.keep_last")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    monitor_every: int = _default("train.monitor_every")
    ema: float = _default("train.ema")  # e.g. 0.999: an EMA of the weights (training/averaging.py)
    swa: bool = False  # stochastic weight averaging: the mean of the weights from swa_start on
    swa_start: float | None = _default("train.swa_start")  # None: 0.75 x epochs
    swa_lr: float | None = _default("train.swa_lr")
    sanity: bool = False  # run the sanity checks before training
    gradcheck: bool = False  # run the gradient check before training
    report: bool = True  # write report.html at the end

    @field_validator("seed")
    @classmethod
    def _seed_range(cls, value: int) -> int:
        if not 0 <= value < SEED_LIMIT:
            raise ValueError("not an integer in [0, 2**63); fix: set train.seed to e.g. 0")
        return value

    @field_validator("epochs")
    @classmethod
    def _whole_epochs(cls, value: float) -> float:
        """2.0 is kept as 2, so config.toml says ``epochs = 10``, not ``10.0``."""
        return int(value) if float(value).is_integer() else value


class StageConfig(_Section):
    """One ``[[search.stage]]``: the notes' coarse -> fine, e.g. 1 epoch x 50 trials."""

    epochs: float = 1.0  # may be fractional: "1 epoch or even less"
    trials: int = Field(50, ge=1)
    # who trains the stage's trials (tuning/population_executor.py): "auto" picks
    # "population" (all at once, training/population.py) where it applies, else "trainer"
    executor: Literal["auto", "population", "trainer"] = "auto"
    # "pbt": population-based training of the stage's trials as one population, exploiting
    # and exploring as [search.pbt] says (training/_population_pbt.py)
    mode: Literal["independent", "pbt"] = "independent"

    @field_validator("epochs")
    @classmethod
    def _epochs(cls, value: float) -> float:
        """A stage's epochs are its trials' ``train.epochs``: the same range."""
        reason = HPARAMS["train.epochs"].problem(value, name="epochs")
        if reason is not None:
            raise ValueError(reason)
        return value


class PBTConfig(_Section):
    """``[search.pbt]``: how a ``mode = "pbt"`` stage exploits and explores (Jaderberg et al.)."""

    every: int = Field(1, ge=1)  # epochs between exploit steps (never after a stage's last)
    quantile: float = Field(0.25, gt=0, le=0.5)  # the worst fraction takes copies of the best
    resample: float = Field(0.25, ge=0, le=1)  # probability a copied value is drawn afresh
    perturb: list[float] = Field(default_factory=lambda: [0.8, 1.2], min_length=1)  # factors

    @field_validator("perturb")
    @classmethod
    def _factors(cls, value: list[float]) -> list[float]:
        if not all(0 < f < float("inf") for f in value):
            raise ValueError("each factor must be a finite number > 0, e.g. [0.8, 1.2]")
        return value


class ResourcesConfig(_Section):
    """``[search.resources]``: what each worker holds on a Ray cluster (``--backend ray``;
    local workers ignore it). Ray takes a fraction up to 1 (workers share the device) and
    whole numbers above it."""

    cpus: float = Field(1, gt=0)
    gpus: float = Field(0, ge=0)

    @field_validator("cpus", "gpus")
    @classmethod
    def _ray_amount(cls, value: float) -> float:
        if value > 1 and not float(value).is_integer():
            raise ValueError(f"{value} is above 1 and not whole: Ray takes e.g. 0.5, 1 or 2")
        return int(value) if float(value).is_integer() else value


class SearchConfig(_Section):
    """``[search]``: what ``babysit.search`` tries; ``space`` is checked by tuning/space.py."""

    sampler: Literal["random", "tpe", "gp"] = "random"  # the notes: random search
    seed: int = Field(
        0, ge=0, lt=2**32
    )  # seeds the sampler (numpy's range) (the trials' training uses train.seed)
    # dotted config key -> distribution, e.g. "optim.lr" = "loguniform(1e-6, 1e1)"
    space: dict[str, str] = Field(
        default_factory=lambda: {key: SEARCH_DEFAULTS[key] for key in DEFAULT_SPACE}
    )
    stage: list[StageConfig] = Field(default_factory=lambda: [StageConfig()], min_length=1)
    pruner: Literal["none", "median", "sh", "hyperband"] = "none"  # stops hopeless trials
    top_k: int = Field(5, ge=1)  # best trials a stage zooms around and border-checks
    direction: Literal["max", "min"] | None = None  # None: the task's (a user objective: max)
    storage: str | None = None  # None: journal.log in the study dir; sqlite:/// | postgresql://
    pbt: PBTConfig = Field(default_factory=PBTConfig)  # for stages with mode = "pbt"
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)  # per Ray worker


class GradcheckConfig(_Section):
    """``[gradcheck]``: what ``babysit gradcheck`` and ``train.gradcheck`` check (the defaults
    are ``babysit.gradcheck``'s; README "Gradient check")."""

    section: ClassVar[str] = "gradcheck"
    datapoints: int = Field(4, ge=1)  # samples checked tensor by tensor (the notes: few)
    h: float | Literal["auto"] = 1e-5  # the step, in (0, 0.1], or "auto"
    coords_per_param: int = Field(10, ge=1)  # coordinates where a direction does not settle
    burn_in_steps: int = Field(0, ge=0)  # Adam steps before a second check
    wrt: Literal["params", "inputs"] = "params"

    @field_validator("h")
    @classmethod
    def _step(cls, value: float | str) -> float | str:
        if value != "auto" and not 0 < float(value) <= 0.1:
            raise ValueError("h must be in (0, 0.1] or 'auto'; e.g. 1e-5")
        return value


class Config(_Section):
    task: TaskConfig = Field(default_factory=TaskConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    search: SearchConfig = Field(default_factory=SearchConfig)
    gradcheck: GradcheckConfig = Field(default_factory=GradcheckConfig)

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

    @model_validator(mode="after")
    def _check_averaging(self) -> Config:
        """One running average at a time; SWA must start before the run ends."""
        t = self.train
        reason: str | None = None
        value: Any = None
        if t.swa and t.ema > 0:
            key, value = "swa", t.swa
            reason = f"train.ema = {t.ema!r} is on too; fix: keep one (ema = 0 or swa = false)"
        elif t.swa and t.swa_start is not None and t.swa_start >= t.epochs:
            key, value = "swa_start", t.swa_start
            reason = (
                f"not below train.epochs = {t.epochs!r}, so SWA would average nothing; fix: "
                "set it lower or leave it out (0.75 x train.epochs)"
            )
        if reason is None:
            return self
        line = InitErrorDetails(
            type=PydanticCustomError("averaging", "{reason}", {"reason": reason}),
            loc=("train", key),
            input=value,
        )
        raise ValidationError.from_exception_data("Config", [line]) from None

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


def differing_keys(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """The dotted ``section.key`` names whose values differ between two config dicts."""
    sections = sorted(set(a) | set(b))
    return [
        f"{section}.{key}"
        for section in sections
        for key in sorted(set(a.get(section, {})) | set(b.get(section, {})))
        if a.get(section, {}).get(key) != b.get(section, {}).get(key)
    ]


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
    return ConfigError(f"{source}: {key} = {value!r} is invalid: {_reason(err, key)}{more}")


def _reason(err: ErrorDetails, key: str) -> str:
    """The table's reason and fix for a hyperparameter (also when pydantic refused the type)."""
    hp = HPARAMS.get(key)
    reason = None if hp is None else hp.problem(err.get("input"))
    return reason or err["msg"].removeprefix("Value error, ")


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
    except RecursionError:
        raise ConfigError(f"--set {key}: the value {TOO_DEEP}") from None
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
        data = read_toml(path, name)
    if overrides:
        data = apply_overrides(data, overrides)
        name += " (with --set)"
    check_depth(data, name)
    return Config.from_dict(data, source=name)
