"""The members' models: built one per member, grouped by architecture, stacked, sized.

Member i is built by the task's model factory from its own [model] table under its own
seed (``splits.seeded(seed)``, as the trainer's ``seed_everything`` before the factory),
so it equals the model a single run with that seed starts from. Members with the same
seed and table share one build.

Dropout: ``F.dropout`` takes its rate as a Python number, which vmap cannot batch, so each
member's ``nn.Dropout`` becomes a :class:`RateDropout` whose rate is a buffer: stacking
gives the population a (P,) rate tensor, and each member drops with its own rate and its
own random mask (vmap's ``randomness="different"``, or one mask per member in the stacked
path). The buffer is not persistent: a member's state_dict equals its model's.

Members share an architecture when their models have the same structure (``repr``) and
the same parameter and buffer names, shapes and dtypes (:func:`signature`).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import stack_module_state

from babysit.optim.rules import init_state
from babysit.splits import seeded
from babysit.tasks import Task
from babysit.training._population_members import Member

__all__ = [
    "HEADROOM",
    "RateDropout",
    "Stack",
    "build_models",
    "bytes_per_member",
    "map_slots",
    "memory_budget",
    "signature",
    "stack",
]

Signature = tuple[str, tuple[tuple[str, tuple[int, ...], torch.dtype], ...]]
# The estimate is multiplied by this before it is compared with the budget: the allocator's
# rounding and fragmentation, and temporaries the estimate does not name.
HEADROOM = 1.5
CPU_FRACTION = 0.5  # of the available RAM, the default budget on the CPU
CUDA_FRACTION = 0.9  # of the free GPU memory, the default budget on a GPU


class RateDropout(nn.Module):
    """Inverted dropout with the rate in a buffer: keep a unit with probability 1 - rate and
    scale it by 1 / (1 - rate) in training (as ``nn.Dropout``); the identity in eval mode.

    A rate of 0 returns x unchanged (every uniform draw in [0, 1) is >= 0).
    """

    rate: Tensor

    def __init__(self, rate: float) -> None:
        super().__init__()
        self.register_buffer("rate", torch.tensor(float(rate)), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return x
        keep = torch.rand_like(x) >= self.rate
        return x * keep / (1 - self.rate)


def with_rate_dropout(model: nn.Module) -> nn.Module:
    """Replace every ``nn.Dropout`` (exactly that class) of ``model`` by a RateDropout, in place."""
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is nn.Dropout:
                setattr(module, name, RateDropout(child.p))
    return model


def signature(model: nn.Module) -> Signature:
    """What members must share to be stacked: structure, parameter and buffer layout."""
    tensors = [*model.named_parameters(), *model.named_buffers()]
    return repr(model), tuple((name, tuple(t.shape), t.dtype) for name, t in tensors)


def build_models(task: Task, members: Sequence[Member]) -> list[nn.Module]:
    """One model per member (factory under its seed, Dropout -> RateDropout), on the CPU."""
    built: dict[tuple[int, str], nn.Module] = {}
    models = []
    for member in members:
        table = member.model_table
        key = (member.seed, json.dumps(table, sort_keys=True, default=repr))
        if key not in built:
            with seeded(member.seed):
                built[key] = with_rate_dropout(task.model_factory(table))
        models.append(built[key])
    return models


@dataclass
class Stack:
    """P models as stacked tensors (leading dimension P) and a template to call them with.

    params / buffers: name -> (P, ...) tensor; state: the update rule's state over params
    (``rules.init_state``); state_keys: the names a member's state_dict holds (its
    model's: parameters and persistent buffers, no dropout rates).
    """

    template: nn.Module  # the first member's model on the meta device (structure only)
    params: dict[str, Tensor]
    buffers: dict[str, Tensor]
    state_keys: list[str]
    state: dict[str, Any] = field(default_factory=dict)

    def update(
        self,
        params: dict[str, Tensor],
        state: dict[str, Any],
        live: Tensor,
        *,
        sync: bool | None = None,
    ) -> None:
        """Take new weights and state, except in rows that are not live (frozen members).

        ``sync`` (default: on the CPU, where a host sync is free): copy back only the frozen
        rows; else (a GPU) select over every row, which needs no sync."""
        if live.device.type == "cpu" if sync is None else sync:
            frozen = (~live).nonzero().flatten()
            if not len(frozen):
                self.params, self.state = dict(params), state
                return

            def keep(new: Tensor, old: Tensor) -> Tensor:
                return new.index_copy_(0, frozen, old.index_select(0, frozen))
        else:

            def keep(new: Tensor, old: Tensor) -> Tensor:
                return torch.where(live.view(-1, *([1] * (new.ndim - 1))), new, old)

        self.params = {k: keep(v, self.params[k]) for k, v in params.items()}
        self.state = map_slots(state, keep, self.state)

    def select(self, rows: Tensor) -> None:
        """Keep the rows ``rows`` (in that order) of every tensor: members that stopped go."""

        def take(x: Tensor, _: Any = None) -> Tensor:
            return x.index_select(0, rows)

        self.params = {k: take(v) for k, v in self.params.items()}
        self.buffers = {k: take(v) for k, v in self.buffers.items()}
        self.state = map_slots(self.state, take, self.state)

    def member_slots(self, row: int) -> dict[str, Any]:
        """Row ``row``'s rule state (copies on the CPU) and the step count t."""
        slots = {
            s: {k: v[row].detach().cpu().clone() for k, v in d.items()}
            for s, d in self.state.items()
            if isinstance(d, dict)
        }
        return {"state": slots, "t": int(self.state.get("t", 0))}


def map_slots(state: dict[str, Any], fn: Any, old: dict[str, Any]) -> dict[str, Any]:
    """``fn(tensor, old tensor)`` over every slot tensor of a rule state (t is kept)."""
    return {
        s: {k: fn(v, old[s][k]) for k, v in d.items()} if isinstance(d, dict) else d
        for s, d in state.items()
    }


def stack(models: Sequence[nn.Module], device: torch.device, rule: str) -> Stack:
    """Stack same-architecture models' parameters and buffers onto ``device``; ``rule``'s
    state starts at zero (``rules.init_state``)."""
    params, buffers = stack_module_state(list(models))
    first = models[0]
    stacked = Stack(
        template=_meta_copy(first),
        params={k: v.detach().to(device) for k, v in params.items()},
        buffers={k: v.detach().to(device) for k, v in buffers.items()},
        state_keys=list(first.state_dict().keys()),
    )
    stacked.state = init_state(rule, stacked.params)
    return stacked


def _meta_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with no storage: functional_call supplies every tensor."""
    return copy.deepcopy(model).to("meta")


def _saved_bytes(model: nn.Module, task: Task, x: Tensor, y: Tensor) -> int:
    """Bytes autograd saves for the backward of one forward + loss on (x, y)."""
    seen: dict[tuple[int, int], int] = {}

    def pack(t: Tensor) -> Tensor:
        if t.device.type != "meta" and t.numel():
            seen[(t.untyped_storage().data_ptr(), int(t.storage_offset()))] = (
                t.numel() * t.element_size()
            )
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        task.loss_fn(model(x), y)
    return sum(seen.values())


def bytes_per_member(
    model: nn.Module,
    task: Task,
    rule: str,
    example: tuple[Tensor, Tensor],
    *,
    batch_size: int,
    eval_batch_size: int,
) -> int:
    """Estimated bytes one member needs while its population trains (before HEADROOM).

    params * (3 + 2 * slots + 2): the weights, their gradient and the new weights; the
    rule's state slots, old and new (``rules.step`` is pure); two temporaries of the
    update. Plus the activations autograd saves per example (measured on ``example``),
    times the larger of the batch sizes (evaluation keeps less than training saves).
    """
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    slots = sum(isinstance(v, Tensor) for v in init_state(rule, torch.zeros(1)).values())
    x, y = example
    probe = copy.deepcopy(model).train()  # a copy: its forward may update buffers (batch norm)
    with torch.enable_grad():
        saved = _saved_bytes(probe, task, x, y)
    per_example = saved / max(len(x), 1)
    return int(param_bytes * (5 + 2 * slots) + per_example * max(batch_size, eval_batch_size))


def _available_ram() -> int:
    """Bytes of RAM available now (MemAvailable; else free pages)."""
    import os

    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    names = ("SC_AVPHYS_PAGES", "SC_PHYS_PAGES")
    for name in names:
        if name in os.sysconf_names:
            return int(os.sysconf(name)) * int(os.sysconf("SC_PAGE_SIZE"))
    return 4 * 2**30


def memory_budget(device: torch.device) -> int:
    """The default bytes a population may use: 90% of the free GPU memory, half the free RAM."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * CUDA_FRACTION)
    return int(_available_ram() * CPU_FRACTION)


def split_bytes(tensors: Iterable[Any]) -> int:
    """Bytes of the tensors among ``tensors`` (a split moved to the device once)."""
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, Tensor))
