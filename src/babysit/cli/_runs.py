"""``babysit train``, ``babysit demo`` and ``babysit report``: a run, the whole recipe, a page."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from babysit.cli._app import (
    ConfigArg,
    DeviceOpt,
    OutOpt,
    QuietOpt,
    SetOpt,
    fail,
    guard,
)
from babysit.config import load_config
from babysit.errors import ConfigError

if TYPE_CHECKING:  # torch loads only once the input is valid
    from babysit.training.run import Run


def train(
    config: ConfigArg = None,
    set_: SetOpt = None,
    out: OutOpt = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out.")] = False,
    device: DeviceOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Train a task as CONFIG says; write the run dir (config, metrics, checkpoints, report)."""

    def go() -> Any:
        if config is None and not resume:
            raise ConfigError("give a CONFIG file (or --resume --out DIR)")
        if device is not None and device not in ("cpu", "cuda"):
            raise ConfigError(f"--device {device!r}: use cpu or cuda")
        # validate before torch is imported, so bad input is answered fast
        cfg = load_config(config, set_ or []) if config is not None else None
        from babysit.training.run import train as run_training

        return run_training(
            cfg,
            out=out,
            overrides=[] if cfg else set_ or [],
            resume=resume,
            device=device,
            quiet=quiet,
        )

    run = guard(go)
    typer.echo(f"run dir: {run.dir}")
    failure = _failure(run)
    if failure is not None:
        typer.echo(f"babysit: {failure}")
        raise typer.Exit(1)


def _failure(run: Run) -> str | None:
    """Why a run exits 1, in one line (printed even with --quiet); None when it succeeded."""
    if run.failed_check:
        return f"the {run.failed_check} check failed, so training did not start"
    if run.diverged:
        from babysit.monitor.log import read_metrics

        records = read_metrics(run.dir / "metrics.jsonl")  # streamed: the event is near the end
        e = next(r for r in records if r["kind"] == "event" and r["what"] == "diverged")
        if e.get("split") == "val":
            return _val_failure(e)
        if e.get("inputs"):  # the data is at fault, not the lr
            which = "NaN" if e["inputs"] == "NaN" else "inf"
            return (
                f"the inputs hold {which} at batch {e['batch']} of epoch {int(e['epoch']) + 1} "
                f"(step {e['step']}), so the loss became {e['loss']}: run stopped; fix the "
                "data (babysit sanity refuses non-finite inputs)"
            )
        return (
            f"loss became {e['loss']} at step {e['step']} (lr {e['lr']:.3g}): run diverged; "
            "lower optim.lr (or add train.clip_grad)"
        )
    return None


def _val_failure(e: dict[str, Any]) -> str:
    """Why a run whose validation loss or metric became NaN/inf exits 1."""
    after = f"after epoch {e.get('epoch')}"
    batch = e.get("nonfinite_inputs_batch")
    if batch is not None:
        return (
            f"the validation inputs hold NaN/inf (batch {batch} of the val split), so "
            f"val_loss is {e.get('loss')} {after}: fix the validation data"
        )
    scores = [("val_loss", e.get("loss"))] + [(k, v) for k, v in e.items() if k.startswith("val_")]
    key, value = next(((k, v) for k, v in scores if not _finite(v)), scores[0])
    return f"{key} became {value} {after}: run diverged; lower optim.lr (or add train.clip_grad)"


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and abs(value) < float("inf")


def demo(
    fast: Annotated[
        bool, typer.Option("--fast", help="Fewer trials and epochs (about a third of the time).")
    ] = False,
    out: OutOpt = None,
    data: Annotated[
        str | None,
        typer.Option(
            "--data",
            help="digits (bundled, default) or cifar10:PATH (a local cifar-10-batches-py folder).",
        ),
    ] = None,
    quiet: QuietOpt = False,
) -> None:
    """The whole recipe: gradient check, sanity checks, search, training, ensemble, report."""
    from babysit.demo import CheckFailed, DemoResult, run_demo

    def go() -> DemoResult:
        try:
            return run_demo(out=out, fast=fast, quiet=quiet, data=data)
        except CheckFailed as exc:  # a check the recipe ran failed: exit 1, as train's gates
            raise fail(str(exc), 1) from None

    typer.echo(guard(go).text())


def report(
    run_dir: Annotated[Path, typer.Argument(help="A run, study or ensemble directory.")],
) -> None:
    """Write DIR/report.html: one self-contained page of a run, a study or an ensemble."""
    from babysit.report.html import write_report

    path = guard(lambda: write_report(run_dir))
    typer.echo(f"report: {path}")
