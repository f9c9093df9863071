"""What a gradient check runs on: a float64 copy of the model, the data in its dtype, the objective.

The datapoints themselves are read by :func:`babysit.splits.first`; what is refused before
anything runs is in ``guards.py``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from babysit._registry import Registry
from babysit.checks.gradcheck.evaluate import Objective
from babysit.errors import ConfigError, DataError

__all__ = [
    "DROPOUT",
    "OBJECTIVES",
    "LossModule",
    "burn_in",
    "cast",
    "function_objective",
    "magnitude",
    "model_copy",
    "wrt",
]

# Switched to eval for the check (F.dropout in user code is covered by the RNG reseed).
DROPOUT: tuple[type[nn.Module], ...] = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)
DROPOUT += (nn.AlphaDropout, nn.FeatureAlphaDropout)


def cast(t: Tensor, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Floating tensors to the check's dtype; integer ones (class labels, token ids) kept."""
    t = t.detach().to(device)
    return t.to(dtype) if t.is_floating_point() else t


def model_copy(model: nn.Module, dtype: torch.dtype, *, keep_dropout: bool) -> nn.Module:
    """A deep copy in ``dtype`` with Dropout modules in eval; the user's model, dtype and mode
    are never changed.

    BatchNorm keeps its mode. In train mode its output uses the batch's statistics only, so
    the copy drops the running averages that every call would update: the forward is then a
    pure function of the parameters, which vmap can batch.
    """
    clone = copy.deepcopy(model).to(dtype)
    for module in clone.modules():
        if isinstance(module, DROPOUT) and not keep_dropout:
            module.eval()
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.training:
            module.track_running_stats = False
            module.running_mean = module.running_var = module.num_batches_tracked = None
    for p in clone.parameters():
        p.grad = None
        if not p.is_contiguous():  # coordinates are perturbed through a flat view
            p.data = p.data.contiguous()
    return clone


def magnitude(x: Tensor, *, parameter: bool) -> float:
    """The size of a typical change of x's entries, which sets the check's steps
    (``h * max(c, |x_i|)``): a step that moves what x feeds by about h.

    A weight matrix or kernel of fan-in F feeds units through ``sum_j w_ij a_j`` with
    ``|a| ~ 1 / (rms(w) sqrt(F))`` when the units are of order 1, so c = rms(w) sqrt(F) (about
    1 at the usual inits; 1e-3 for weights scaled by 1e-3 whose inputs are scaled by 1e3).
    A vector (bias, norm scale) adds to or scales units directly: c = max(1, rms). Data (the
    inputs) moves units in proportion to itself: c = rms(x). An all-zero tensor: c = 1.
    """
    rms = float(x.detach().double().pow(2).mean().sqrt()) if x.numel() else 0.0
    if not math.isfinite(rms) or rms == 0.0:
        return 1.0
    if not parameter:
        return rms
    if x.ndim >= 2 and x.shape[0]:
        return rms * math.sqrt(x.numel() // x.shape[0])
    return max(1.0, rms)


class LossModule(nn.Module):
    """``loss_fn(model(x), y) + reg_fn(model, reg)`` as a module, so ``functional_call`` can
    swap any parameter and ``reg_fn`` sees the swapped one too. ``part`` keeps only the data
    term ("data"), only the regularisation term ("reg"), or both ("total")."""

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable[[Tensor, Tensor], Tensor],
        reg_fn: Callable[[nn.Module, float], Tensor],
        reg: float,
        part: str,
    ) -> None:
        super().__init__()
        self.model = model
        self.fns = (loss_fn, reg_fn)  # a tuple: not registered as submodules
        self.reg, self.part = reg, part

    def forward(self, inputs: Tensor, targets: Tensor) -> Tensor:
        loss_fn, reg_fn = self.fns
        terms = []
        if self.part != "reg":
            terms.append(loss_fn(self.model(inputs), targets))
        if self.part != "data" and self.reg:
            terms.append(reg_fn(self.model, self.reg))
        return sum(terms[1:], terms[0])


# (module, inputs, targets, *, seed, batched) -> the objective gradcheck(wrt=name) checks
ObjectiveBuilder = Callable[..., Objective]
OBJECTIVES: Registry[ObjectiveBuilder] = Registry("wrt", error=ConfigError)


def wrt(name: str) -> Callable[[ObjectiveBuilder], ObjectiveBuilder]:
    """Register what a check differentiates with respect to (``gradcheck(wrt=name)``)."""
    return OBJECTIVES.register(name)


def padding_rows(model: nn.Module) -> dict[str, tuple[int, str]]:
    """Parameter name -> (row, reason) of Embedding rows whose gradient PyTorch zeroes on
    purpose (``padding_idx``): they enter the forward, so a check would call them wrong."""
    out = {}
    for prefix, module in model.named_modules():
        idx = getattr(module, "padding_idx", None)
        if isinstance(module, nn.Embedding | nn.EmbeddingBag) and idx is not None:
            name = f"{prefix}.weight" if prefix else "weight"
            out[name] = (idx, f"row {idx} (padding_idx): PyTorch zeroes its gradient on purpose")
    return out


@wrt("params")
def params_objective(
    module: LossModule, x: Tensor, y: Tensor, *, seed: int, batched: bool
) -> Objective:
    """The loss as a function of the model's trainable parameters (tied ones once)."""
    named = [(n, p) for n, p in module.model.named_parameters() if p.requires_grad]
    names = [n for n, _ in named]

    def many(k: int, stack: Tensor) -> Tensor:  # (P, *shape) -> (P,)
        key = "model." + names[k]
        return vmap(lambda w: functional_call(module, {key: w}, (x, y)).reshape(()))(stack)

    leaves: list[Tensor] = [p for _, p in named]
    skip, rows = {}, padding_rows(module.model)
    for k, name in enumerate(names):
        if (row := rows.get(name)) is not None:
            mask = torch.zeros(leaves[k].shape, dtype=torch.bool)
            mask[row[0]] = True
            skip[k] = (mask.reshape(-1), row[1])
    return Objective(
        names,
        leaves,
        lambda: module(x, y),
        many if batched else None,
        seed,
        magnitudes=[magnitude(p, parameter=True) for p in leaves],
        skip=skip,
    )


@wrt("inputs")
def inputs_objective(
    module: LossModule, x: Tensor, y: Tensor, *, seed: int, batched: bool
) -> Objective:
    """The loss as a function of the input data (the notes' deep-net example)."""
    if not x.is_floating_point():
        raise DataError(f"gradcheck(wrt='inputs'): inputs are {x.dtype}; only floating inputs")
    leaf = x.detach().clone().contiguous().requires_grad_(True)

    def many(k: int, stack: Tensor) -> Tensor:  # (P, *x.shape) -> (P,)
        return vmap(lambda xb: module(xb, y).reshape(()))(stack)

    return Objective(
        ["inputs"],
        [leaf],
        lambda: module(leaf, y),
        many if batched else None,
        seed,
        magnitudes=[magnitude(leaf, parameter=False)],
    )


def function_objective(
    f: Callable[[Tensor], Tensor], x: Tensor, *, seed: int, batched: bool
) -> Objective:
    """The objective ``f(x)`` of one tensor (for ``gradcheck_fn``; steps ``h * max(1, |x_i|)``
    as the notes' absolute h)."""
    leaf = x.detach().clone().contiguous().requires_grad_(True)

    def many(k: int, stack: Tensor) -> Tensor:  # (P, *x.shape) -> (P,)
        return vmap(lambda t: f(t).reshape(()))(stack)

    return Objective(["x"], [leaf], lambda: f(leaf), many if batched else None, seed)


def burn_in(
    module: LossModule, x: Tensor, y: Tensor, *, steps: int, lr: float, seed: int
) -> tuple[float, float]:
    """``steps`` Adam steps on the copy (the notes: check once the loss starts to go down);
    returns the loss before and after."""
    params = [p for p in module.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    torch.manual_seed(seed)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = module(x, y)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    with torch.no_grad():
        return losses[0] if losses else float(module(x, y)), float(module(x, y))
