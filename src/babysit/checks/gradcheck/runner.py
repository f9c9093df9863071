"""One gradient check of a model: its copy, the stages and loss parts, the whole-batch row.

``gradcheck`` validates the options and the data, then calls a :class:`ModelCheck` once (or
twice: again in float32 when the model computes in float32 inside forward).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from babysit.checks.gradcheck.inputs import OBJECTIVES, LossModule, burn_in, cast, model_copy
from babysit.checks.gradcheck.kinks import count_ties
from babysit.checks.gradcheck.report import GradcheckReport, ParamCheck
from babysit.checks.gradcheck.verdicts import Settings, check_objective, joint_row, thresholds
from babysit.tasks import RegFn

__all__ = ["FLOAT32_NOTE", "REG_OVERWHELMS", "ModelCheck"]

REG_OVERWHELMS = 10.0  # reg gradient norm this many times the data one: warn (the notes)


@dataclass
class ModelCheck:
    """``loss_fn(model(inputs), targets) + reg_fn(model, reg)``, ready to be checked."""

    model: nn.Module
    loss_fn: Callable[[Tensor, Tensor], Tensor]
    inputs: Tensor
    targets: Tensor
    reg: float
    reg_fn: RegFn
    wrt: str
    keep_dropout: bool
    batched: bool

    def __call__(
        self, st: Settings, n: int, burn_in_steps: int, burn_in_lr: float
    ) -> GradcheckReport:
        """Rows for every tensor (first ``n`` samples), per stage and part, and the whole
        batch's row when ``n`` is less than the batch; the user's model and RNG untouched."""
        objective = OBJECTIVES.get_or_raise(self.wrt, where="gradcheck")
        warnings = [] if st.dtype == torch.float64 else [FLOAT32_NOTE]
        device = next((p.device for p in self.model.parameters()), self.inputs.device)
        parts = ("data", "reg", "total") if self.reg > 0 and self.wrt == "params" else ("total",)
        rows: list[ParamCheck] = []
        kink_ops: set[str] = set()
        ties: dict[str, int] = {}
        with torch.random.fork_rng(devices=_cuda(device)):
            clone = model_copy(self.model, st.dtype, keep_dropout=self.keep_dropout)
            loss_fn = self.loss_fn
            if isinstance(loss_fn, nn.Module):  # class weights etc. follow the dtype
                loss_fn = copy.deepcopy(loss_fn).to(st.dtype)
            xs, ys = cast(self.inputs, st.dtype, device), cast(self.targets, st.dtype, device)
            for stage in ("init", "burn_in")[: 1 + (burn_in_steps > 0)]:
                if stage == "burn_in":
                    warnings.append(
                        self._burn_in(clone, loss_fn, xs, ys, st, burn_in_steps, burn_in_lr)
                    )
                grads: dict[str, dict[str, Tensor]] = {}
                for part in parts:
                    module = LossModule(clone, loss_fn, self.reg_fn, self.reg, part)
                    batched = self.batched and not self.keep_dropout
                    obj = objective(module, xs[:n], ys[:n], seed=st.seed, batched=batched)
                    got, g, d0 = check_objective(
                        obj, part=part, stage=stage, st=st, warnings=warnings
                    )
                    rows += got
                    grads[part] = dict(zip(obj.names, g, strict=True))
                    kink_ops |= {name for name, _, _ in d0}
                    for op, count in count_ties(d0).items():
                        ties[op] = max(ties.get(op, 0), count)
                    if part == "total" and n < len(xs):
                        whole = objective(module, xs, ys, seed=st.seed, batched=False)
                        rows.append(joint_row(whole, part, stage, st, warnings, len(xs)))
                    warnings += _skipped(obj.names, obj.skip, stage, part)
                warnings += _reg_overwhelms(grads, stage)
        warnings += _notes(self.model, ties, n)
        extra = {
            "datapoints": n,
            "batch": len(xs),
            "whole_batch": n < len(xs),
            "wrt": self.wrt,
            "kink_ops": sorted(kink_ops),
            "ties": ties,
            "reg": self.reg,
            "burn_in_steps": burn_in_steps,
        }
        return GradcheckReport(rows, thresholds(st, **extra), warnings)

    def _burn_in(
        self,
        clone: nn.Module,
        loss_fn: Callable[[Tensor, Tensor], Tensor],
        xs: Tensor,
        ys: Tensor,
        st: Settings,
        steps: int,
        lr: float,
    ) -> str:
        whole = LossModule(clone, loss_fn, self.reg_fn, self.reg, "total")
        before, after = burn_in(whole, xs, ys, steps=steps, lr=lr, seed=st.seed)
        return (
            f"burn-in: {steps} Adam steps (lr {lr:g}) on {len(xs)} samples, loss "
            f"{before:.4g} -> {after:.4g}"
            + ("" if after < before else " (did not go down: try a larger burn_in_lr)")
        )


FLOAT32_NOTE = (
    "checked in float32: the notes' looser scale applies; float64 is preferred (errors "
    "plummet from 1e-2 to 1e-8)"
)


def _skipped(
    names: list[str], skip: dict[int, tuple[Tensor, str]], stage: str, part: str
) -> list[str]:
    if stage != "init" or part != "total":
        return []
    return [f"{names[k]}: {why}; left out of the check" for k, (_, why) in skip.items()]


def _notes(model: nn.Module, ties: dict[str, int], n: int) -> list[str]:
    """What the check did about ties and BatchNorm, in words."""
    from babysit.checks.gradcheck.guards import batchnorm_in_train

    out = []
    if ties:
        listed = ", ".join(f"{op} {count}" for op, count in sorted(ties.items()))
        out.append(
            f"ties at the checked point (entries exactly at a kink: {listed}): probes across "
            "them were judged as subgradients, never failed"
        )
    if batchnorm_in_train(model):
        out.append(
            f"BatchNorm in train mode: the {n} checked datapoints share batch statistics, so "
            "every step moves every unit; kinks crossed were told from the loss values and "
            "judged within the notes' band for kinks (running averages left out of the copy)"
        )
    return out


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
