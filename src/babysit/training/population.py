"""Population training: many configs of one architecture trained at once (torch.func).

    from babysit.training.population import train_population

    result = train_population(
        "config.toml",
        [{"optim.lr": 0.1, "train.reg": 1e-4}, {"optim.lr": 0.01, "model.dropout": 0.5}],
        out="runs/pop",
    )
    result.values        # each member's best validation score (None: it never had one)
    result.diverged      # each member's divergence flag

Member i trains as ``babysit.train`` would train the base config with member i's
overrides (``_population_members`` says which keys may differ), with the notes' update
rules (``optim/rules.py``) in place of torch.optim: its initial weights are the model
factory's under its seed, its minibatches come in its seed's order (``splits.Batches``),
its lr follows its own schedule. The P members' weights are stacked (leading dimension
P) and every step updates all of them with one ``rules.step`` whose hyperparameters are
(P,) tensors. Equivalence (tested for every rule): member i's trajectory equals
``rules.step`` applied to its model alone to 1e-10 in float64, and to 1e-4 over 50 steps
in float32 (batched and single matrix products round differently); with a constant lr
it equals torch.optim too, where optim/rules.py says the two agree.

Engines (``_population_engines``): "stacked" (an nn.Sequential of known layers, run with
batched matrix products), "vmap" (any model torch.func.vmap can batch), "sequential"
(one member after another: a model with data-dependent control flow or an op vmap cannot
batch; same results, with a note saying why). "auto" picks the first that runs.

Divergence: a member whose loss becomes NaN/inf is frozen at that step and marked
diverged (its run dir says so as a single run's would); the others go on unaffected.

Memory: a member needs about ``_population_model.bytes_per_member`` bytes (weights,
gradients, the rule's state, the pure update's copies, activations of a batch), times
``HEADROOM``. A population larger than ``memory_budget`` (default: 90% of the free GPU
memory, half the available RAM on a CPU) is trained in chunks one after another, with
the same results; a chunk that still runs out of GPU memory is halved and retried.

Population-based training (``pbt=PBT(...)``, ``_population_pbt``): every ``pbt.every``
epochs the worst members take copies of the best ones' weights, optimizer state and
hyperparameters, which are then perturbed; each member's ``lineage`` (whose weights it
took, when, its hyperparameters before and after) and ``final`` hyperparameters are in
its MemberResult, population.json and its metrics.jsonl ("exploit" events). A PBT
population is not cut into chunks for the CPU's caches (its members must train together);
only a population too large for memory is, and each chunk then exploits within itself.

Writes, with ``out``: a run dir per member ``<out>/m<i>/`` (``_population_log``; other
names with ``names``) and, when ``out`` was new or empty, ``<out>/population.json``
(each member's params, best record, how it stopped, dir).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from babysit._io import json_safe, write_json_atomic
from babysit.config import Config, load_config
from babysit.errors import TaskError
from babysit.splits import first, seeded, split_size
from babysit.tasks import Task, task_for
from babysit.training._population_engines import choose_engine
from babysit.training._population_log import member_dirs
from babysit.training._population_loop import OnEpoch, PopulationLoop
from babysit.training._population_members import Group, Member, MemberResult, plan_groups
from babysit.training._population_model import (
    HEADROOM,
    build_models,
    bytes_per_member,
    memory_budget,
    signature,
    split_bytes,
    stack,
)
from babysit.training._population_pbt import PBT, default_space
from babysit.training.evaluate import SCORES
from babysit.training.run import select_device

__all__ = ["PBT", "MemberResult", "PopulationResult", "train_population"]

_MB = 2**20
# On a CPU a population trains fastest in chunks whose weights are a few MB: its
# elementwise passes (the update, the activations) then stay in the caches. Measured on
# the 2-core machine of benchmarks/population.py, digits-MLP members (30 KB of weights):
# 64 or 128 at once train about 15% faster than 256 at once (16 at once: 30% slower).
CPU_CHUNK_BYTES = 4 * _MB


@dataclass
class PopulationResult:
    """What a population's training left: one MemberResult per member, in the given order."""

    members: list[MemberResult]
    metric_key: str  # "val_<metric>", as in the epoch records
    direction: str  # "max" | "min"
    notes: list[str] = field(default_factory=list)  # engines passed over, chunking, retries
    dir: Path | None = None

    @property
    def values(self) -> list[float | None]:
        """Each member's best validation score (None when it never finished an epoch)."""
        return [m.best.get(self.metric_key) for m in self.members]

    @property
    def diverged(self) -> list[bool]:
        return [m.diverged for m in self.members]

    @property
    def dirs(self) -> list[Path | None]:
        return [m.dir for m in self.members]

    def to_dict(self) -> dict[str, Any]:
        """population.json: plain types (NaN as "nan", as everywhere)."""
        members = [
            {
                "index": m.index,
                "params": m.params,
                "dir": None if m.dir is None else m.dir.name,
                "best": m.best,
                "stopped": m.stopped,
                "diverged_step": m.diverged_step,
            }
            | ({"lineage": m.lineage, "final": m.final} if m.final or m.lineage else {})
            for m in self.members
        ]
        return json_safe(
            {
                "metric": self.metric_key,
                "direction": self.direction,
                "notes": self.notes,
                "members": members,
            }
        )


def train_population(
    config: str | os.PathLike[str] | Mapping[str, Any] | Config | None,
    members: Sequence[Mapping[str, Any]],
    *,
    task: Task | None = None,
    out: str | os.PathLike[str] | None = None,
    device: str | None = None,
    memory_budget: int | None = None,
    engine: str = "auto",
    on_epoch: OnEpoch | None = None,
    names: Sequence[str] | None = None,
    pbt: PBT | None = None,
) -> PopulationResult:
    """Train the base ``config`` once per member of ``members`` (dotted-key overrides), at once.

    task: as in ``babysit.train`` (default: the config's). out: the dir of the members' run
    dirs (None: nothing written); names: their names in it (default ``m<i>``), each new or
    empty. device: "cpu" | "cuda" | "auto" (default: the config's train.device).
    memory_budget: bytes the population may use at once (default: see the module).
    engine: "auto" | "stacked" | "vmap" | "sequential". on_epoch(epoch, {index: epoch
    record}) -> indices of members to stop ("pruned"), after every epoch. pbt:
    population-based training (None: the members train independently); its ``space``
    None explores the explorable keys the members set (resampling among their values).
    Bad input raises ConfigError / TaskError / DataError before anything is written.
    """
    base = load_config(config)
    groups = plan_groups(base, members)
    if pbt is not None and pbt.space is None:
        pbt = replace(pbt, space=default_space(members))
    if task is None:
        task = task_for(base)
    if task.metric not in SCORES and task.metric != "loss":
        raise TaskError(
            f"Task.metric {task.metric!r} is unknown: use one of {', '.join([*SCORES, 'loss'])}"
        )
    dev = select_device(device or base.train.device)
    run_dir = None if out is None else Path(out)
    dirs = None if run_dir is None else member_dirs(run_dir, len(members), names)
    owned = run_dir is not None and (not run_dir.exists() or not any(run_dir.iterdir()))
    result = PopulationResult(
        [MemberResult(i, dict(params)) for i, params in enumerate(members)],
        metric_key=f"val_{task.metric}",
        direction=task.direction,
        dir=run_dir,
    )
    slow: list[str] = []  # a model vmap cannot batch: said in a warning too
    # dropout masks are drawn from torch's global generator: seeded, and the caller's kept
    with seeded(base.train.seed, dev):
        for group in groups:
            for sub, models in _by_architecture(task, group):
                chunked = _Chunked(task, sub, models, dev, dirs, result, engine, on_epoch, slow)
                chunked.pbt = pbt
                chunked.run(memory_budget)
    if run_dir is not None and owned:  # a dir of its own: the population's summary too
        write_json_atomic(run_dir / "population.json", result.to_dict())
    for line in slow:
        warnings.warn(line, stacklevel=2)
    return result


def _by_architecture(task: Task, group: Group) -> list[tuple[Group, list[nn.Module]]]:
    """The group's members built, split by architecture (each part: one population)."""
    models = build_models(task, group.members)
    parts: dict[Any, tuple[list[Member], list[nn.Module]]] = {}
    for member, model in zip(group.members, models, strict=True):
        entry = parts.setdefault(signature(model), ([], []))
        entry[0].append(member)
        entry[1].append(model)
    return [(Group(group.config, ms), mods) for ms, mods in parts.values()]


class _Chunked:
    """Trains one architecture's members: sized into chunks, each chunk one population."""

    def __init__(
        self,
        task: Task,
        group: Group,
        models: list[nn.Module],
        device: torch.device,
        dirs: Mapping[int, Path] | None,
        result: PopulationResult,
        engine: str,
        on_epoch: OnEpoch | None,
        slow: list[str],
    ) -> None:
        self.task, self.group, self.models, self.device = task, group, models, device
        self.dirs, self.result, self.engine, self.on_epoch = dirs, result, engine, on_epoch
        self.slow = slow  # the notes that members run one after another: warned about
        self.pbt: PBT | None = None  # population-based training: members train together
        train = group.config.train
        n = min(train.batch_size, split_size(task.train, "train"))
        self.example = first(task.train, n, name="train").read()

    def chunk_size(self, budget: int | None) -> int:
        """How many members fit in ``budget`` bytes at once (at least 1); notes a split."""
        train = self.group.config.train
        need = bytes_per_member(
            self.models[0],
            self.task,
            self.group.rule,
            self.example,
            batch_size=train.batch_size,
            eval_batch_size=train.eval_batch_size,
        )
        need = int(need * HEADROOM)
        fixed = sum(
            split_bytes(s) for s in (self.task.train, self.task.val) if isinstance(s, tuple | list)
        )
        total = (memory_budget(self.device) if budget is None else budget) - fixed
        size = max(1, total // max(need, 1))
        count = len(self.group.members)
        if size < count:
            chunks = -(-count // size)
            self.result.notes.append(
                f"population: {count} members need about {need / _MB:.1f} MB each, "
                f"{total / _MB:.0f} MB are free for them: trained in {chunks} chunks of <= {size}"
            )
        if self.pbt is not None and size < count:
            self.result.notes.append("pbt: each chunk exploits within itself")
        if self.device.type == "cpu" and self.pbt is None:  # see CPU_CHUNK_BYTES
            weights = sum(p.numel() * p.element_size() for p in self.models[0].parameters())
            size = min(size, max(1, CPU_CHUNK_BYTES // max(weights, 1)))
        return min(size, count)

    def run(self, budget: int | None) -> None:
        members, models = self.group.members, self.models
        size = self.chunk_size(budget)
        size = -(-len(members) // -(-len(members) // size))  # equal chunks: 256 by 139 -> 128
        for start in range(0, len(members), size):
            self._chunk(members[start : start + size], models[start : start + size])

    def _note(self, line: str) -> None:
        if line not in self.result.notes:
            self.result.notes.append(line)

    def _slow(self, line: str) -> None:
        if line not in self.result.notes:
            self.result.notes.append(line)
            self.slow.append(line)

    def _reset(self, members: list[Member]) -> None:
        """Forget what a failed attempt recorded (its run dirs are recreated too)."""
        for m in members:
            self.result.members[m.index] = MemberResult(m.index, dict(m.params))

    def _chunk(self, members: list[Member], models: list[nn.Module]) -> None:
        """Train one chunk; out of GPU memory: halve it and train the halves."""
        try:
            self._train(members, models, self.engine)
        except torch.OutOfMemoryError:
            if len(members) == 1:
                raise
            torch.cuda.empty_cache()
            half = len(members) // 2
            self._note(
                f"population: out of memory with {len(members)} members at once; "
                f"retried as {half} + {len(members) - half}"
            )
            self._reset(members)
            self._chunk(members[:half], models[:half])
            self._chunk(members[half:], models[half:])

    def _train(self, members: list[Member], models: list[nn.Module], name: str) -> None:
        """Train one chunk with engine ``name``; "auto" falls back to "sequential" if the
        chosen engine fails later than its probe did (a path the probe did not take)."""
        stacked = stack(models, self.device, self.group.rule)
        example = (self.example[0].to(self.device), self.example[1].to(self.device))
        engine, notes = choose_engine(name, stacked, self.task, example)
        model = type(stacked.template).__name__
        for note in notes:
            self._note(note)
        if engine.name == "sequential" and notes:
            self._slow(f"population: {model} members run one after another (vmap cannot batch it)")
        loop = PopulationLoop(
            self.task,
            self.group.config,
            members,
            stacked,
            engine,
            device=self.device,
            dirs=self.dirs,
            on_epoch=self.on_epoch,
            results={m.index: self.result.members[m.index] for m in members},
            pbt=self.pbt,
            notes=self.result.notes,
        )
        try:
            loop.run()
        except torch.OutOfMemoryError:
            raise
        except Exception as exc:  # e.g. vmap refusing a branch only later steps take
            if name != "auto" or engine.name == "sequential":
                raise
            first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            self._slow(
                f"population: {engine.name} failed on {model} ({first_line}); "
                "its members run one after another"
            )
            self._reset(members)
            self._train(members, models, "sequential")
