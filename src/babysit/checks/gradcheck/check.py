"""Gradient checks: per parameter tensor, kink-aware, in float64 (the notes' "Gradient checks").

    >>> report = babysit.gradcheck(model, F.cross_entropy, x, y)   # every parameter tensor
    >>> print(report)          # one row per tensor: max rel error, kinks, verdict, raw numbers
    >>> report.passed          # False iff some tensor's verdict is "fail"

What it does, after the notes: centered differences ``(f(x+h) - f(x-h)) / 2h``; relative
errors net of the *measured* round-off and truncation (fail > 1e-4, ok < 1e-7; see
``report.Scale``); float64 on a deep copy (the user's model, dtype, mode and RNG state are
left as they were); at most 4 datapoints by default, the rest of the batch along one
direction; dropout off, and the RNG reseeded before every evaluation; per tensor two random
directions, then ``coords_per_param`` coordinates stratified by magnitude where a direction
did not settle it; kinks (relu, max, max-pool, abs, clamp, hinge losses, sort, where, ...)
recorded, ties at the point detected, and a probe across a kink checked at a smaller step or
as a subgradient, never failed for it; data loss and regularisation checked separately when
``reg > 0``; optional burn-in. Module map: ``inputs`` (copy, objectives), ``guards``
(refusals), ``evaluate`` (evaluations, noise), ``kinks``/``kink_rules`` (the recorder),
``probes`` (coordinates, directions), ``leaf`` (stages A and B), ``resolve`` (kinks),
``verdicts`` (rows), ``runner`` (a model's check), ``report`` (result types).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from babysit.checks.gradcheck.guards import (
    LossDtypeError,
    check_data,
    check_model,
    explain,
    float32_inside,
)
from babysit.checks.gradcheck.inputs import OBJECTIVES, cast, function_objective
from babysit.checks.gradcheck.kinks import count_ties
from babysit.checks.gradcheck.report import SCALES, GradcheckReport, ParamCheck
from babysit.checks.gradcheck.runner import FLOAT32_NOTE, ModelCheck, _cuda
from babysit.checks.gradcheck.verdicts import Settings, check_objective, thresholds
from babysit.errors import ConfigError, DataError
from babysit.splits import first, seeded, train_view
from babysit.tasks import RegFn, Task, l2_weights

# public names: re-exported by this package's __init__.py (its __all__)
__all__ = [
    "DATAPOINTS",
    "FLOOR",
    "GradcheckReport",
    "ParamCheck",
    "gradcheck",
    "gradcheck_fn",
    "gradcheck_task",
    "numerical_gradient",
    "rel_error",
]

DATAPOINTS = 4  # the notes: "use only few datapoints" (fewer kinks, faster)
FLOOR = 0.0  # relative-error floor, as a fraction of the tensor's largest |gradient|


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


def _settings(
    h: float | str, count: int, seed: int, floor: float, dtype: torch.dtype, *, lazy: bool = True
) -> Settings:
    """Validate the shared options (ConfigError names the option and the fix)."""
    name = str(dtype).removeprefix("torch.")
    if name not in SCALES:
        raise ConfigError(f"gradcheck: dtype {name} has no scale; use torch.float64 or float32")
    if h != "auto" and not (isinstance(h, int | float) and 0 < h <= 1e-1):
        raise ConfigError(f"gradcheck: h must be in (0, 0.1] or 'auto', got {h!r}")
    if count < 1 or not 0 <= floor < 1:
        raise ConfigError(f"gradcheck: need coords >= 1 and 0 <= floor < 1, got {count}, {floor}")
    return Settings(h, count, seed, floor, SCALES[name], dtype, lazy)


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
    checked (default: all), plus the random directions. ``batched``: evaluate with vmap where
    f allows it (the plain loop otherwise). Steps are ``h * max(1, |x_i|)``.
    """
    st = _settings(h, num_checks or max(1, x.numel()), seed, floor, dtype, lazy=False)
    warnings = [] if dtype == torch.float64 else [FLOAT32_NOTE]
    if analytic is not None and analytic.shape != x.shape:
        raise DataError(f"gradcheck_fn: analytic has shape {analytic.shape}, x has {x.shape}")
    check_data(x.reshape(-1), torch.zeros(0), where="gradcheck_fn")
    with torch.random.fork_rng(devices=_cuda(x.device)):
        obj = function_objective(f, cast(x, dtype, x.device), seed=seed, batched=batched)
        given = None if analytic is None else [cast(analytic, dtype, x.device)]
        try:
            rows, _, d0 = check_objective(
                obj, part="total", stage="init", st=st, warnings=warnings, analytic=given
            )
        except LossDtypeError as exc:
            if exc.dtype != torch.float32 or dtype != torch.float64:
                raise DataError(f"gradcheck_fn: f returns {exc.dtype}; return {dtype}") from None
            report = gradcheck_fn(
                f, x, analytic=analytic, h="auto" if h == 1e-5 else h, num_checks=num_checks,
                seed=seed, dtype=torch.float32, floor=floor, batched=batched,
            )  # fmt: skip
            report.warnings.insert(0, "f computes in float32: checked in float32")
            return report
    extra = {"kink_ops": sorted({n for n, _, _ in d0}), "ties": count_ties(d0)}
    return GradcheckReport(rows, thresholds(st, **extra), warnings)


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

    Each tensor: two random directions (every entry; the entries below 1 % of its largest
    gradient), then ``coords_per_param`` coordinates stratified by magnitude where a direction
    did not settle it (see ``leaf.py``). datapoints: the first that many samples of the batch
    (None: all); the rest of the batch is checked along one direction over every tensor (the
    "whole batch" row). burn_in_steps: Adam steps (lr ``burn_in_lr``) on the whole batch,
    after which the check runs again (rows with ``stage="burn_in"``). reg > 0: rows for the
    data loss, the reg term and both (``part``). wrt: "params" or "inputs". dtype: float64,
    or float32 for float32-only kernels (looser scale; a model that casts to float32 inside
    forward is checked so, with a warning). keep_dropout: leave Dropout on (same mask each
    evaluation: the RNG is reseeded). floor: relative-error floor as a fraction of the
    tensor's largest |gradient| (0: none; errors are net of measured round-off anyway).
    """
    st = _settings(h, coords_per_param, seed, floor, dtype)
    OBJECTIVES.get_or_raise(wrt, where="gradcheck")
    if (datapoints is not None and datapoints < 1) or burn_in_steps < 0 or reg < 0:
        raise ConfigError("gradcheck: need datapoints >= 1, burn_in_steps >= 0 and reg >= 0")
    check_data(inputs, targets)
    check_model(model, wrt)
    n = len(inputs) if datapoints is None else min(datapoints, len(inputs))
    run = ModelCheck(model, loss_fn, inputs, targets, reg, reg_fn, wrt, keep_dropout, batched)
    try:
        try:
            return run(st, n, burn_in_steps, burn_in_lr)
        except (RuntimeError, LossDtypeError) as exc:
            if dtype != torch.float64 or not float32_inside(exc):
                raise
            h32 = "auto" if h == 1e-5 else h
            report = run(_settings(h32, coords_per_param, seed, floor, torch.float32), n,
                         burn_in_steps, burn_in_lr)  # fmt: skip
            first = str(exc).splitlines()[0]
            report.warnings.insert(
                0,
                f"the model computes in float32 inside forward (in float64: {first}); "
                "checked in float32 with its looser scale",
            )
            return report
    except (RuntimeError, ValueError) as exc:
        if (clear := explain(exc, n)) is not None:
            raise clear from None
        raise


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
