"""``babysit gradcheck``, ``babysit sanity`` and ``babysit lr-find``: the checks before learning."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from babysit._render import print_report
from babysit.cli._app import (
    ConfigArg,
    DeviceOpt,
    OutOpt,
    SetOpt,
    TaskOpt,
    guard,
    resolve_config,
)
from babysit.config import load_config
from babysit.errors import ConfigError


def _run_check(name: str, config: Path | None, task: str | None, sets: list[str] | None) -> None:
    from babysit.checks.gates import GATES

    def go() -> Any:
        cfg = resolve_config(config, task, sets)
        from babysit.tasks import task_for

        return GATES[name].run(task_for(cfg), cfg)

    report = guard(go)
    print_report(report, title=GATES[name].title)
    if not report.passed:
        raise typer.Exit(1)


def gradcheck(
    config: ConfigArg = None,
    task: TaskOpt = None,
    set_: SetOpt = None,
    datapoints: Annotated[
        int | None, typer.Option(help="Samples checked tensor by tensor (gradcheck.datapoints).")
    ] = None,
    h: Annotated[str | None, typer.Option("--h", help="Step, or auto (gradcheck.h).")] = None,
    wrt: Annotated[str | None, typer.Option(help="params or inputs (gradcheck.wrt).")] = None,
    burn_in_steps: Annotated[
        int | None, typer.Option(help="Adam steps, then check again (gradcheck.burn_in_steps).")
    ] = None,
) -> None:
    """Check the analytic gradient of every parameter tensor against finite differences."""
    flags = {"datapoints": datapoints, "h": h, "wrt": wrt, "burn_in_steps": burn_in_steps}
    sets = [f"gradcheck.{k}={v}" for k, v in flags.items() if v is not None] + list(set_ or [])
    _run_check("gradcheck", config, task, sets)


def sanity(config: ConfigArg = None, task: TaskOpt = None, set_: SetOpt = None) -> None:
    """Sanity checks before training: chance loss, reg raises loss, overfit a tiny subset."""
    _run_check("sanity", config, task, set_)


def lr_find(
    config: ConfigArg = None,
    set_: SetOpt = None,
    out: OutOpt = None,
    steps: Annotated[int, typer.Option(help="Minibatches in the sweep.")] = 100,
    lr_min: Annotated[float, typer.Option(help="First lr of the sweep.")] = 1e-7,
    lr_max: Annotated[float, typer.Option(help="Last lr of the sweep.")] = 10.0,
    device: DeviceOpt = None,
) -> None:
    """LR range test: sweep the lr log-uniformly over one short run and suggest a value."""

    def go() -> Any:
        if config is None:
            raise ConfigError("give a CONFIG file")
        if device is not None and device not in ("cpu", "cuda"):
            raise ConfigError(f"--device {device!r}: use cpu or cuda")
        cfg = load_config(config, set_ or [])
        out_dir = (
            out or Path("runs") / f"lr-find-{cfg.task.name.replace('/', '-').replace(':', '-')}"
        )
        from babysit.training.lr_find import check_out_dir, check_sweep, plot_lr_find
        from babysit.training.lr_find import lr_find as sweep
        from babysit.training.run import select_device

        check_sweep(cfg, lr_min=lr_min, lr_max=lr_max, steps=steps)  # all before the sweep
        check_out_dir(out_dir)
        dev = select_device(device or cfg.train.device)
        from babysit.tasks import task_for

        result = sweep(task_for(cfg), cfg, steps=steps, lr_min=lr_min, lr_max=lr_max, device=dev)
        return plot_lr_find(result, out_dir)

    result = guard(go)
    typer.echo(str(result))
    typer.echo(f"plot: {result.files['plot']}")
