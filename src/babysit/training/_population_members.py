"""Who a population's members are: a base config, each member's overrides, and the groups.

A population is given as a base config and, per member, a mapping of dotted config keys
to values (``{"optim.lr": 0.01, "train.reg": 1e-4}``: what a search trial's params are;
``{}`` is the base itself). Keys are of two kinds:

    per member  every hyperparameter of optim/hparams.py except SHARED_KEYS, train.seed,
                and every [model] key (a member's model is built from its own table)
    shared      everything else: optim.rule, schedule.kind, train.epochs, train.batch_size,
                train.eval_batch_size, train.device, ...

Members whose shared keys agree form a group: a group trains as one population (its
members further split by architecture, models.py's tables permitting, see
``_population_model.signature``). A per-member value is checked against its range
(``hparams.key_problem``) without building a full Config for each member: 4,096 members
are resolved in milliseconds. A group's shared values are checked by ``Config.from_dict``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from babysit.config import Config
from babysit.errors import ConfigError
from babysit.optim.hparams import HPARAMS, RULE_HPARAMS, SCHEDULE_KINDS, key_problem
from babysit.optim.rules import RULES

__all__ = [
    "PER_MEMBER_KEYS",
    "SHARED_KEYS",
    "Group",
    "Member",
    "MemberResult",
    "plan_groups",
]

# One value for a whole population: every member takes the same steps over the same batches.
SHARED_KEYS = frozenset({"train.epochs", "train.batch_size", "train.eval_batch_size"})
# Numbers that may differ per member (their ranges: optim/hparams.py), and the seed.
PER_MEMBER_KEYS = frozenset({k for k in HPARAMS if k not in SHARED_KEYS} | {"train.seed"})


# Sections that describe the whole population, never one member.
_NOT_PER_RUN = ("task", "search")


def _per_member(key: str) -> bool:
    return key in PER_MEMBER_KEYS or key.startswith("model.")


@dataclass(frozen=True)
class Member:
    """One member: its index in the caller's list, its overrides, and its resolved values."""

    index: int
    params: Mapping[str, Any]  # the overrides as given (dotted keys)
    shared: Mapping[str, Any]  # the group's config, flat: dotted key -> value

    def get(self, key: str) -> Any:
        """The member's value of a dotted key (its override, else the group's)."""
        return self.params[key] if key in self.params else self.shared.get(key)

    @property
    def seed(self) -> int:
        return int(self.get("train.seed"))

    @property
    def model_table(self) -> dict[str, Any]:
        """The [model] table the member's model is built from."""
        table = {k[6:]: v for k, v in self.shared.items() if k.startswith("model.")}
        table.update({k[6:]: v for k, v in self.params.items() if k.startswith("model.")})
        return table

    def config_dict(self) -> dict[str, Any]:
        """The member's whole config as a nested dict (for its config.toml)."""
        nested: dict[str, Any] = {}
        for key, value in {**self.shared, **self.params}.items():
            section, _, name = key.partition(".")
            nested.setdefault(section, {})[name] = value
        return nested


@dataclass(frozen=True)
class Group:
    """Members that share every shared key: one population (chunked to fit in memory)."""

    config: Config  # the shared values (per-member keys hold the base's values)
    members: list[Member]

    @property
    def rule(self) -> str:
        return self.config.optim.rule

    def column(self, key: str, *, none: float | None = None) -> list[Any]:
        """Every member's value of ``key``, in member order (None replaced by ``none``)."""
        values = [m.get(key) for m in self.members]
        return values if none is None else [none if v is None else v for v in values]


def _flat(config: Config) -> dict[str, Any]:
    """``{"optim.lr": 0.001, "model.hidden": [100], ...}``; None values are kept."""
    data = config.model_dump(mode="python")
    flat = {f"{s}.{k}": v for s, table in data.items() if s != "model" for k, v in table.items()}
    flat.update({f"model.{k}": v for k, v in config.model_table().items()})
    return flat


def _check_member(index: int, params: Mapping[str, Any]) -> None:
    """A per-member value out of its range: ConfigError naming the member, key and value."""
    for key, value in params.items():
        if not isinstance(key, str) or "." not in key:
            raise ConfigError(
                f"population member {index}: key {key!r} is not a dotted config key; "
                "fix: write e.g. 'optim.lr'"
            )
        if key.partition(".")[0] in _NOT_PER_RUN:
            raise ConfigError(
                f"population member {index}: {key} cannot differ between members (one task "
                "and one search for the whole population); fix: set it in the base config"
            )
        if key == "train.seed" and (not isinstance(value, int) or isinstance(value, bool)):
            raise ConfigError(f"population member {index}: train.seed={value!r} is not an int")
        reason = key_problem(key, value) if key in PER_MEMBER_KEYS else None
        if reason is not None:
            raise ConfigError(f"population member {index}: {key}={value!r} is {reason}")
        if key in ("train.ema", "train.swa") and value:
            raise ConfigError(f"population member {index}: {key}={value!r}: {_NO_AVERAGING}")


def _group_config(base: Config, shared: tuple[tuple[str, Any], ...], index: int) -> Config:
    """The base with a group's shared overrides, validated (ConfigError names the member)."""
    if not shared:
        return base
    data = base.to_dict()
    for key, value in shared:
        section, _, name = key.partition(".")
        data.setdefault(section, {})[name] = value
    return Config.from_dict(data, source=f"population member {index}")


_NO_AVERAGING = (
    "a population does not keep a running average of the weights; fix: train with "
    "babysit.train (a search: executor = 'trainer'), or turn it off"
)


def _check_trainable(config: Config) -> None:
    """The pure rules train populations; a stateful plateau schedule is handled per member."""
    rule = config.optim.rule
    if rule not in RULES:
        raise ConfigError(
            f"optim.rule={rule!r} has no pure update rule (optim/rules.py), so it cannot train "
            f"a population (full batch: {RULE_HPARAMS[rule].full_batch}); use one of "
            f"{', '.join(RULES)}"
        )
    SCHEDULE_KINDS.get_or_raise(config.schedule.kind, where="schedule.kind")
    if config.train.ema > 0 or config.train.swa:
        on = f"train.ema={config.train.ema!r}" if config.train.ema > 0 else "train.swa=true"
        raise ConfigError(f"{on}: {_NO_AVERAGING}")
    epochs = config.train.epochs
    if not float(epochs).is_integer():  # the trainer cuts a last partial epoch; this loop not yet
        raise ConfigError(
            f"train.epochs={epochs!r}: a population trains whole epochs; fix: give a whole "
            "number of epochs (fractional stages run through babysit.train)"
        )


def _key(value: Any) -> Any:
    """A hashable stand-in for a config value (lists become tuples)."""
    if isinstance(value, list | tuple):
        return tuple(_key(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _key(v)) for k, v in value.items()))
    return value


def plan_groups(base: Config, members: Sequence[Mapping[str, Any]]) -> list[Group]:
    """Split the members into groups by their shared keys, in order of first appearance.

    Raises ConfigError for a value out of range, an unknown key or rule, or no members.
    """
    if not members:
        raise ConfigError("population: no members; fix: give at least one (an empty dict each)")
    keyed: dict[Any, tuple[Config, list[int]]] = {}
    for index, params in enumerate(members):
        _check_member(index, params)
        shared = tuple(sorted((k, v) for k, v in params.items() if not _per_member(k)))
        key = _key(shared)
        if key not in keyed:
            config = _group_config(base, shared, index)
            _check_trainable(config)
            keyed[key] = (config, [])
        keyed[key][1].append(index)
    groups = []
    for config, indices in keyed.values():
        flat = _flat(config)
        group_members = [
            Member(i, {k: v for k, v in members[i].items() if _per_member(k)}, flat)
            for i in indices
        ]
        groups.append(Group(config, group_members))
    return groups


@dataclass
class MemberResult:
    """How one member's training went; its run dir (when written) holds the same and more.

    best: the epoch record with the best validation score (as ``Run.best``); epochs: every
    epoch record, in order; stopped: "diverged" (a NaN/inf loss at ``diverged_step``, the
    step that took no update), "early_stop" (train.early_stop), "pruned" (the on_epoch
    hook stopped it) or None (it trained every epoch). With population-based training:
    lineage, its exploit events in order (``_population_exploit``), and final, the
    explored hyperparameters it ended with (``params`` are those it started with).
    """

    index: int
    params: dict[str, Any]
    dir: Path | None = None
    best: dict[str, Any] = field(default_factory=dict)
    epochs: list[dict[str, Any]] = field(default_factory=list)
    stopped: str | None = None
    diverged_step: int | None = None
    lineage: list[dict[str, Any]] = field(default_factory=list)
    final: dict[str, float] = field(default_factory=dict)

    @property
    def diverged(self) -> bool:
        return self.stopped == "diverged"
