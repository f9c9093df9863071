"""LR range test: one short run with the lr swept log-uniformly, and a robust suggestion.

The lr goes from ``lr_min`` to ``lr_max`` geometrically over ``steps`` minibatches while
the loss is recorded; the sweep stops early once the smoothed loss exceeds ``diverge``
times its minimum. The suggestion is one order of magnitude below the lr at the minimum
of the smoothed loss: the minimum sits where the loss is about to blow up (the notes'
"too much energy"), so a tenth of it is safely inside the stable range. The often
quoted steepest-slope point is not used: on a noisy curve its position jumps by orders
of magnitude between seeds.
"""

from __future__ import annotations

import io
import math
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from babysit._io import write_bytes_atomic, write_json_atomic
from babysit.config import Config
from babysit.errors import ConfigError, DataError
from babysit.optim.build import create_optimizer
from babysit.splits import Batches
from babysit.tasks import Task
from babysit.training.checkpoint import seed_everything

__all__ = ["LRFindResult", "check_out_dir", "check_sweep", "lr_find", "plot_lr_find"]


@dataclass
class LRFindResult:
    """The sweep: lr and loss per step, the smoothed loss, and the suggested lr."""

    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    suggestion: float
    lr_at_min: float
    stopped_early: bool
    files: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        reason = "loss blew up" if self.stopped_early else "reached lr_max"
        return (
            f"lr range test: {len(self.lrs)} steps from {self.lrs[0]:.1e} to {self.lrs[-1]:.1e} "
            f"({reason}); smoothed loss lowest at lr {self.lr_at_min:.2e}; "
            f"suggested optim.lr = {self.suggestion:.2e}"
        )


def check_sweep(config: Config, *, lr_min: float, lr_max: float, steps: int) -> None:
    """ConfigError unless ``0 < lr_min < lr_max < inf``, ``steps >= 5`` and the rule sweeps."""
    if not 0 < lr_min < lr_max < math.inf:
        raise ConfigError(
            f"lr-find: --lr-min {lr_min!r} and --lr-max {lr_max!r}: need finite "
            "0 < lr_min < lr_max, e.g. --lr-min 1e-7 --lr-max 10"
        )
    if steps < 5:
        raise ConfigError(f"lr-find: --steps {steps!r} is too few for a curve; use >= 5")
    if config.optim.rule == "lbfgs":
        raise ConfigError("lr-find: L-BFGS chooses its own step by line search; use another rule")


def check_out_dir(out: Path) -> None:
    """ConfigError unless ``out`` is a writable directory or can be made one (asked before
    the sweep, so a bad --out is not found only once the minutes of sweeping are spent)."""
    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        what = "is a file" if existing == out else f"lies under the file {existing}"
        raise ConfigError(f"lr-find: --out {out}: {what}; give a directory for the plot")
    try:  # a probe, removed at once: os.access says yes to root even where mkdir fails
        os.rmdir(tempfile.mkdtemp(prefix=".babysit-probe-", dir=existing))
    except OSError as exc:
        raise ConfigError(
            f"lr-find: --out {out}: cannot write in {existing} ({exc.strerror or exc})"
        ) from None


def _check_finite_inputs(x: torch.Tensor, y: torch.Tensor, *, batch: int) -> None:
    for what, t in (("inputs", x), ("targets", y)):
        if t.is_floating_point() and not bool(t.isfinite().all()):
            which = "NaN" if bool(t.isnan().any()) else "inf"
            raise DataError(
                f"lr-find: the {what} hold {which} at batch {batch}, so the loss is not finite "
                "at any lr; fix the data (babysit sanity refuses non-finite inputs)"
            )


def _smooth(losses: list[float], beta: float) -> list[float]:
    """Bias-corrected exponential moving average (as Adam corrects its first moment)."""
    out, avg = [], 0.0
    for i, loss in enumerate(losses, start=1):
        avg = beta * avg + (1 - beta) * loss
        out.append(avg / (1 - beta**i))
    return out


def lr_find(
    task: Task,
    config: Config,
    *,
    lr_min: float = 1e-7,
    lr_max: float = 10.0,
    steps: int = 100,
    beta: float = 0.9,
    diverge: float = 4.0,
    device: str | torch.device = "cpu",
) -> LRFindResult:
    """Sweep the lr of ``config``'s rule over ``steps`` minibatches of ``task.train``."""
    check_sweep(config, lr_min=lr_min, lr_max=lr_max, steps=steps)
    generator = seed_everything(config.train.seed)
    model = task.model_factory(config.model_table()).to(device)
    model.train()
    hp = config.optim.model_dump(exclude={"rule"}) | {"lr": lr_min}
    optimizer = create_optimizer(model.parameters(), config.optim.rule, hp)
    batches = Batches(
        task.train,
        config.train.batch_size,
        shuffle=True,
        generator=generator,
        device=device,
        name="train",
    )
    ratio = lr_max / lr_min
    lrs: list[float] = []
    losses: list[float] = []
    best, stopped = math.inf, False
    data = iter(batches)
    for i in range(steps):
        lr = lr_min * ratio ** (i / (steps - 1))  # log-uniform from lr_min to lr_max
        for group in optimizer.param_groups:
            group["lr"] = lr
        try:
            x, y = next(data)
        except StopIteration:
            data = iter(batches)
            x, y = next(data)
        loss = task.loss_fn(model(x), y) + task.reg_fn(model, config.train.reg)
        value = loss.item()
        if not math.isfinite(value):
            _check_finite_inputs(x, y, batch=i + 1)  # the data's fault, not the lr's
            stopped = True
            break
        lrs.append(lr)
        losses.append(value)
        smoothed = _smooth(losses, beta)[-1]
        best = min(best, smoothed)
        if i > 5 and smoothed > diverge * best:
            stopped = True
            break
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    if len(losses) < 3:
        raise ConfigError(
            f"lr-find: the loss blew up within {len(losses)} steps of lr_min={lr_min:g}; "
            "lower --lr-min"
        )
    smooth = _smooth(losses, beta)
    i_min = min(range(len(smooth)), key=smooth.__getitem__)
    return LRFindResult(
        lrs=lrs,
        losses=losses,
        smoothed=smooth,
        suggestion=lrs[i_min] / 10,
        lr_at_min=lrs[i_min],
        stopped_early=stopped,
    )


def plot_lr_find(result: LRFindResult, out_dir: str | Path) -> LRFindResult:
    """Write lr_find.png (loss vs lr, log x axis) and lr_find.json into ``out_dir``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    ax.plot(result.lrs, result.losses, color="0.75", lw=1, label="loss per minibatch")
    ax.plot(result.lrs, result.smoothed, color="C0", lw=2, label="smoothed")
    ax.axvline(result.lr_at_min, color="C3", ls=":", label=f"minimum {result.lr_at_min:.1e}")
    ax.axvline(result.suggestion, color="C2", ls="--", label=f"suggested {result.suggestion:.1e}")
    ax.set_xscale("log")
    top = min(max(result.smoothed[:5]) * 2, max(result.losses))
    ax.set_ylim(min(result.losses) * 0.9, top)
    ax.set(xlabel="learning rate", ylabel="loss", title="LR range test")
    ax.legend(fontsize=8)
    fig.tight_layout()
    png = out / "lr_find.png"
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    write_bytes_atomic(png, buffer.getvalue())
    result.files = {"plot": str(png), "json": str(out / "lr_find.json")}
    write_json_atomic(out / "lr_find.json", result.to_dict())
    return result
