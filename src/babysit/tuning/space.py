"""Search spaces: dotted config keys -> dimensions (dimensions.py), checked against the Config.

The notes: search the learning rate and the regularization strength on a log scale
(``learning_rate = 10 ** uniform(-6, 1)``), dropout on its own scale (``uniform(0, 1)``).
A space maps dotted config keys to distribution strings::

    "optim.lr"      = "loguniform(1e-6, 1e1)"    # 10 ** U(-6, 1)
    "model.dropout" = "uniform(0, 1)"            # U(0, 1)
    "model.hidden"  = "choice([64], [128, 128])"
    "optim.mu"      = "default"                  # the notes' choice(0.5, 0.9, 0.95, 0.99)

Keys are checked against the Config: ``section.key`` with a section of the Config
(``[model]`` takes any keys), values inside the key's limits, whole numbers for int keys.
Problems raise :class:`SpaceError` (one line: key, value, reason, fix). This module
imports neither torch nor optuna (config.py validates spaces at load).
"""

from __future__ import annotations

import math
import typing
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import annotated_types as at
from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

from babysit._registry import unknown_name
from babysit.errors import ConfigError
from babysit.optim.hparams import HPARAMS, key_problem
from babysit.tuning.dimensions import Dimension, Limits, Range, parse_dimension

__all__ = [
    "DEFAULT_SPACE",
    "SEARCH_DEFAULTS",
    "SpaceError",
    "key_limits",
    "parse_space",
    "resolve",
]

# The notes' defaults ("Hyperparameter optimization"), from their one home: the
# `search_default` column of optim/hparams.py (lr and reg loguniform(1e-6, 1e1), ...).
SEARCH_DEFAULTS: dict[str, str] = {
    key: hp.search_default for key, hp in HPARAMS.items() if hp.search_default is not None
}
DEFAULT_SPACE = ("optim.lr", "train.reg")  # [search.space] when the config gives none
NOT_SEARCHED = ("task", "search")  # Config sections a space may not name
SET_BY_STAGES = ("train.epochs",)  # each [[search.stage]] sets these


class SpaceError(ConfigError):
    """A bad ``[search.space]`` entry; ``key``, ``text`` and ``reason`` are kept apart."""

    def __init__(self, key: str, text: object, reason: str) -> None:
        super().__init__(f"search.space.{key} = {text!r} is invalid: {reason}")
        self.key, self.text, self.reason = key, text, reason


def _field(config: BaseModel, key: str) -> FieldInfo | None:
    """The pydantic field ``key`` names; None for a free-form ``[model]`` key."""
    section, _, name = key.partition(".")
    sections = [n for n in type(config).model_fields if n not in NOT_SEARCHED]
    if not name or "." in name or section not in sections:
        raise ValueError(
            f"{key!r} is not a config key: write 'section.key' with a section among "
            f"{', '.join(sections)}, e.g. 'optim.lr'"
        )
    model = type(getattr(config, section))
    if model.model_config.get("extra") == "allow":  # [model] takes any keys
        return None
    if name not in model.model_fields:
        keys = [f"{section}.{n}" for n in model.model_fields]
        raise ValueError(unknown_name("config key", key, keys))
    if key in SET_BY_STAGES:
        raise ValueError(f"{key} is set by each [[search.stage]]: remove it from the space")
    return model.model_fields[name]


def key_limits(key: str) -> Limits:
    """The values hyperparameter ``key`` takes (optim/hparams.py), as the search's Limits."""
    r = HPARAMS[key].range
    return Limits(
        r.low if math.isfinite(r.low) else None,
        r.high if math.isfinite(r.high) else None,
        low_open=not r.low_closed,
        high_open=not r.high_closed,
    )


def _limits(key: str, info: FieldInfo | None) -> Limits:
    """What ``key`` may hold: its range in optim/hparams.py, else the pydantic field's bounds."""
    if key in HPARAMS:
        return key_limits(key)
    if info is None:
        return Limits()  # a free-form [model] key that no table describes
    bounds: dict[str, Any] = {}
    for m in info.metadata:
        bounds |= {
            at.Gt: {"low": getattr(m, "gt", None), "low_open": True},
            at.Ge: {"low": getattr(m, "ge", None), "low_open": False},
            at.Lt: {"high": getattr(m, "lt", None), "high_open": True},
            at.Le: {"high": getattr(m, "le", None), "high_open": False},
        }.get(type(m), {})
    return Limits(**bounds)


def _whole_numbers(info: FieldInfo) -> bool:
    types = typing.get_args(info.annotation) or (info.annotation,)
    return int in types and float not in types


def _show(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else repr(value)


def _check_values(key: str, dim: Dimension, info: FieldInfo | None, limits: Limits) -> None:
    """Every value the dimension can give must be a valid value of ``key``."""
    if info is not None and isinstance(dim, Range) and not dim.integer and _whole_numbers(info):
        raise ValueError(f"{key} takes whole numbers: use intuniform(lo, hi) or choice(...)")
    values = dim.checked_values if isinstance(dim, Range) else dim.choices
    adapter = TypeAdapter(info.rebuild_annotation()) if info is not None else None
    for v in values:
        reason = key_problem(key, v)
        if reason is not None:
            raise ValueError(
                f"{_show(v)} is not a valid {key} ({reason}): keep the distribution inside "
                "the values it takes"
            )
        if adapter is not None:
            try:
                adapter.validate_python(v)
            except ValidationError as exc:
                msg = exc.errors()[0]["msg"]
                raise ValueError(
                    f"{_show(v)} is not a valid {key} ({msg}): keep the distribution inside "
                    "the values it takes"
                ) from None
        elif isinstance(v, int | float) and not limits.contains(v):
            raise ValueError(
                f"{_show(v)} is outside the values {key} takes ({limits}): keep the distribution "
                "inside them"
            )


def resolve(config: BaseModel, key: str, text: object) -> Dimension:
    """One space entry as a dimension with its key's limits; SpaceError on bad input."""
    try:
        info = _field(config, key)
        if text == "default":
            if key not in SEARCH_DEFAULTS:
                raise ValueError(
                    f"no default range for {key} (defaults: {', '.join(SEARCH_DEFAULTS)}): "
                    "write a distribution"
                )
            text = SEARCH_DEFAULTS[key]
        limits = _limits(key, info)
        dim = parse_dimension(text)
        _check_values(key, dim, info, limits)
    except ValueError as exc:
        raise SpaceError(key, text, str(exc)) from None
    return replace(dim, limits=limits)


def parse_space(
    config: BaseModel, space: Mapping[str, object] | None = None
) -> dict[str, Dimension]:
    """``config.search.space`` (or ``space``) as dimensions, in the config's order."""
    entries = space if space is not None else config.search.space  # type: ignore[attr-defined]
    return {key: resolve(config, key, text) for key, text in entries.items()}
