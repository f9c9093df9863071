"""Gradient checks: per parameter tensor, kink-aware, in float64 (the notes' "Gradient checks").

    >>> report = babysit.gradcheck(model, F.cross_entropy, x, y)   # every parameter tensor
    >>> print(report)          # one row per tensor: max rel error, kinks, verdict, raw numbers
    >>> report.passed          # False iff some tensor's verdict is "fail"

What it does, after the notes: centered differences ``(f(x+h) - f(x-h)) / 2h``; relative
errors judged by the notes' scale (> 1e-2 fail, 1e-4..1e-2 warn, 1e-7..1e-4 only across
kinks, < 1e-7 ok); float64 on a deep copy (the user's model, dtype, mode and RNG state are
left as they were); at most 4 datapoints by default; dropout off, and the RNG reseeded before
every evaluation; ``coords_per_param`` coordinates of every tensor plus one random direction;
kinks (relu, max, max-pool, abs, clamp, hinge losses, sort, where) recorded per checked
coordinate, where the analytic value is checked as a subgradient instead; data loss and
regularisation checked separately when ``reg > 0``; optional burn-in.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from babysit.checks.gradcheck.evaluate import Objective
from babysit.checks.gradcheck.inputs import (
    OBJECTIVES,
    LossModule,
    burn_in,
    cast,
    function_objective,
    model_copy,
)
from babysit.checks.gradcheck.report import SCALES, GradcheckReport, ParamCheck
from babysit.checks.gradcheck.verdicts import Settings, check_objective, thresholds
from babysit.errors import ConfigError, DataError
from babysit.splits import first, seeded, train_view
from babysit.tasks import RegFn, Task, l2_weights

# public names: re-exported by this package's __init__.py (its __all__)

DATAPOINTS = 4  # the notes: "use only few datapoints" (fewer kinks, faster)
FLOOR = 1e-3  # relative-error floor, as a fraction of the tensor's largest |gradient|
REG_OVERWHELMS = 10.0  # reg gradient norm this many times the data one: warn (the notes)


def rel_error(a: Tensor | float, b: Tensor | float) -> float:
    """Max over elements of ``|a - b| / max(|a|, |b|)``; an element where both are 0 counts 0.

    The notes' relative error, symmetric in a and b. NaN anywhere gives NaN.
    """
    a64 = torch.as_tensor(a, dtype=torch.float64)
    b64 = torch.as_tensor(b, dtype=torch.float64).to(a64.device)
    num, den = (a64 - b64).abs(), torch.maximum(a64.abs(), b64.abs())
    ratio = torch.where((a64 == 0) & (b64 == 0), 0.0, num / den)
    return float(ratio.max()) if ratio.numel() else 0.0


def numerical_gradient(f: Callable[[Tensor], Tensor | float], x: Tensor, h: float = 1e-5) -> Tensor:
    """Centered difference ``(f(x+h) - f(x-h)) / 2h`` of a scalar ``f`` for every element of x.

    Evaluated in x's dtype (pass float64); 2h is the step actually representable,
    ``(x+h) - (x-h)``. ``f`` receives one work tensor, perturbed in place and restored.
    """
    if h <= 0:
        raise ConfigError(f"numerical_gradient: h must be > 0, got {h}")
    work = x.detach().clone().contiguous()
    flat, out = work.view(-1), torch.empty(work.numel(), dtype=torch.float64)
    with torch.no_grad():
        for i in range(flat.numel()):
            old = flat[i].clone()
            flat[i] = old + h
            plus, f_plus = flat[i].clone(), float(f(work))
            flat[i] = old - h
            minus, f_minus = flat[i].clone(), float(f(work))
            flat[i] = old
            out[i] = (f_plus - f_minus) / float(plus - minus)
    return out.to(x.dtype).reshape(x.shape)


def _settings(h: float | str, count: int, seed: int, floor: float, dtype: torch.dtype) -> Settings:
    """Validate the shared options (ConfigError names the option and the fix)."""
    name = str(dtype).removeprefix("torch.")
    if name not in SCALES:
        raise ConfigError(f"gradcheck: dtype {name} has no scale; use torch.float64 or float32")
    if h != "auto" and not (isinstance(h, int | float) and 0 < h <= 1e-1):
        raise ConfigError(f"gradcheck: h must be in (0, 0.1] or 'auto', got {h!r}")
    if count < 1 or not 0 <= floor < 1:
        raise ConfigError(f"gradcheck: need coords >= 1 and 0 <= floor < 1, got {count}, {floor}")
    return Settings(h, count, seed, floor, SCALES[name], dtype)


def _precision_warnings(dtype: torch.dtype) -> list[str]:
    if dtype == torch.float64:
        return []
    return [
        "checked in float32: the notes' looser scale applies; float64 is preferred (errors "
        "plummet from 1e-2 to 1e-8)"
    ]


def gradcheck_fn(
    f: Callable[[Tensor], Tensor],
    x: Tensor,
    *,
    analytic: Tensor | None = None,
    h: float | str = 1e-5,
    num_checks: int | None = None,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    floor: float = FLOOR,
    batched: bool = True,
) -> GradcheckReport:
    """Check the gradient of a scalar function of one tensor; one row, named "x".

    ``analytic``: the gradient to check (default: autograd of f). ``num_checks``: coordinates
    checked (default: all), plus one random direction. ``batched``: evaluate with vmap where f
    allows it (the plain loop otherwise).
    """
    st = _settings(h, num_checks or max(1, x.numel()), seed, floor, dtype)
    warnings = _precision_warnings(dtype)
    if analytic is not None and analytic.shape != x.shape:
        raise DataError(f"gradcheck_fn: analytic has shape {analytic.shape}, x has {x.shape}")
    with torch.random.fork_rng(devices=_cuda(x.device)):
        obj = function_objective(f, cast(x, dtype, x.device), seed=seed, batched=batched)
        given = None if analytic is None else [cast(analytic, dtype, x.device)]
        rows, _, d0 = check_objective(
            obj, part="total", stage="init", st=st, warnings=warnings, analytic=given
        )
    return GradcheckReport(rows, thresholds(st, kink_ops=sorted({n for n, _ in d0})), warnings)


def gradcheck(
    model: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    inputs: Tensor,
    targets: Tensor,
    *,
    h: float | str = 1e-5,
    coords_per_param: int = 10,
    seed: int = 0,
    reg: float = 0.0,
    reg_fn: RegFn = l2_weights,
    datapoints: int | None = DATAPOINTS,
    burn_in_steps: int = 0,
    burn_in_lr: float = 1e-3,
    wrt: str = "params",
    dtype: torch.dtype = torch.float64,
    keep_dropout: bool = False,
    floor: float = FLOOR,
    batched: bool = True,
) -> GradcheckReport:
    """Check ``loss_fn(model(inputs), targets) + reg_fn(model, reg)`` for EVERY parameter tensor.

    datapoints: the first that many samples of the batch (None: all). burn_in_steps: Adam
    steps (lr ``burn_in_lr``) on the whole batch, after which the check runs again (rows with
    ``stage="burn_in"``). reg > 0: rows for the data loss, the reg term and both (``part``).
    wrt: "params" or "inputs". dtype: float64, or float32 for float32-only kernels (looser
    scale). keep_dropout: leave Dropout on (same mask each evaluation: the RNG is reseeded).
    floor: relative-error floor as a fraction of the tensor's largest |gradient|.
    """
    st = _settings(h, coords_per_param, seed, floor, dtype)
    objective = OBJECTIVES.get_or_raise(wrt, where="gradcheck")
    if (datapoints is not None and datapoints < 1) or burn_in_steps < 0 or reg < 0:
        raise ConfigError("gradcheck: need datapoints >= 1, burn_in_steps >= 0 and reg >= 0")
    warnings = _precision_warnings(dtype)
    device = next((p.device for p in model.parameters()), inputs.device)
    parts = ("data", "reg", "total") if reg > 0 and wrt == "params" else ("total",)
    rows: list[ParamCheck] = []
    kink_ops: set[str] = set()
    with torch.random.fork_rng(devices=_cuda(device)):
        clone = model_copy(model, dtype, keep_dropout=keep_dropout)
        if isinstance(loss_fn, nn.Module):  # class weights etc. follow the dtype
            loss_fn = copy.deepcopy(loss_fn).to(dtype)
        xs, ys = cast(inputs, dtype, device), cast(targets, dtype, device)
        n = len(xs) if datapoints is None else min(datapoints, len(xs))
        for stage in ("init", "burn_in")[: 1 + (burn_in_steps > 0)]:
            if stage == "burn_in":
                whole = LossModule(clone, loss_fn, reg_fn, reg, "total")
                before, after = burn_in(
                    whole, xs, ys, steps=burn_in_steps, lr=burn_in_lr, seed=seed
                )
                warnings.append(
                    f"burn-in: {burn_in_steps} Adam steps (lr {burn_in_lr:g}) on {len(xs)} "
                    f"samples, loss {before:.4g} -> {after:.4g}"
                    + ("" if after < before else " (did not go down: try a larger burn_in_lr)")
                )
            grads: dict[str, dict[str, Tensor]] = {}
            for part in parts:
                module = LossModule(clone, loss_fn, reg_fn, reg, part)
                obj: Objective = objective(
                    module, xs[:n], ys[:n], seed=seed, batched=batched and not keep_dropout
                )
                got, g, d0 = check_objective(obj, part=part, stage=stage, st=st, warnings=warnings)
                rows += got
                grads[part] = dict(zip(obj.names, g, strict=True))
                kink_ops |= {name for name, _ in d0}
            warnings += _reg_overwhelms(grads, stage)
    extra = {"datapoints": n, "wrt": wrt, "kink_ops": sorted(kink_ops), "reg": reg}
    return GradcheckReport(rows, thresholds(st, **extra, burn_in_steps=burn_in_steps), warnings)


def gradcheck_task(
    task: Task,
    model_cfg: dict[str, Any],
    *,
    reg: float = 0.0,
    seed: int = 0,
    burn_in_steps: int = 0,
    **options: Any,
) -> GradcheckReport:
    """:func:`gradcheck` of a task: its model (built under ``torch.manual_seed(seed)``), a few
    datapoints of its un-augmented train view, its loss_fn and reg_fn.

    options: any keyword of :func:`gradcheck`; ``burn_in_batch`` (default 64) samples are
    taken for the burn-in, of which the first ``datapoints`` are checked.
    """
    burn_in_batch = int(options.pop("burn_in_batch", 64))
    split, name = train_view(task)
    with seeded(seed):
        model = task.model_factory(model_cfg)
        want = max(options.get("datapoints") or DATAPOINTS, burn_in_batch * (burn_in_steps > 0))
        inputs, targets = first(split, want, name=name, where="gradcheck").read()
    return gradcheck(
        model,
        task.loss_fn,
        inputs,
        targets,
        reg=reg,
        reg_fn=task.reg_fn,
        seed=seed,
        burn_in_steps=burn_in_steps,
        **options,
    )


def _reg_overwhelms(grads: dict[str, dict[str, Tensor]], stage: str) -> list[str]:
    """The notes: a reg gradient far above the data gradient can mask a wrong data gradient."""
    out = []
    for name, g_reg in grads.get("reg", {}).items():
        r, d = float(g_reg.norm()), float(grads["data"][name].norm())
        if r > REG_OVERWHELMS * d:
            ratio = f"{r / d:.0f}x" if d > 0 else "nonzero where it is zero in"
            out.append(
                f"{stage}: the reg gradient of {name} is {ratio} its data gradient (norms "
                f"{r:.1e} vs {d:.1e}); it can mask a wrong data gradient: the data part is "
                "checked alone above, or lower reg"
            )
    return out


def _cuda(device: torch.device) -> list[int]:
    """CUDA devices whose RNG state fork_rng must save and restore."""
    return [device.index or 0] if device.type == "cuda" else []
