"""``babysit ensemble``: members from seeds, a study's top trials or checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from babysit.cli._app import (
    DeviceOpt,
    QuietOpt,
    guard,
)
from babysit.errors import ConfigError


def ensemble(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Member checkpoints or run dirs (a run dir: its best checkpoint); "
            "with --seeds, the CONFIG (.toml) to train.",
            show_default=False,
        ),
    ] = None,
    from_study: Annotated[
        Path | None, typer.Option("--from-study", help="A study dir: its best trials.")
    ] = None,
    top: Annotated[int | None, typer.Option("--top", help="Trials of --from-study (K).")] = None,
    from_run: Annotated[
        Path | None, typer.Option("--from-run", help="A run dir: its checkpoints.")
    ] = None,
    checkpoints: Annotated[
        int | None, typer.Option("--checkpoints", help="Checkpoints of --from-run (K).")
    ] = None,
    pick: Annotated[str, typer.Option("--pick", help="--from-run's K: best | last.")] = "best",
    seeds: Annotated[
        int | None, typer.Option("--seeds", help="Train CONFIG with N seeds (N members).")
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Ensemble directory to write.")] = None,
    average: Annotated[
        str, typer.Option("--average", help="Average the members' probs | logits.")
    ] = "probs",
    distill: Annotated[
        Path | None, typer.Option("--distill", help="Student config: distil the ensemble.")
    ] = None,
    temperature: Annotated[
        float | None, typer.Option("--temperature", help="Distillation T (default 4).")
    ] = None,
    alpha: Annotated[
        float | None, typer.Option("--alpha", help="Weight of the soft targets (default 0.9).")
    ] = None,
    device: DeviceOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Ensemble a study's top trials, a run's checkpoints, N seeds and/or checkpoint files."""

    def go() -> Any:
        if device is not None and device not in ("cpu", "cuda"):
            raise ConfigError(f"--device {device!r}: use cpu or cuda")
        configs = [p for p in paths or [] if p.suffix == ".toml"]
        members = [p for p in paths or [] if p.suffix != ".toml"]
        if seeds is not None and len(configs) != 1:
            raise ConfigError("--seeds N needs one CONFIG (.toml) to train, e.g. --seeds 5 a.toml")
        if seeds is None and configs:
            raise ConfigError(f"{configs[0]}: a CONFIG is trained only with --seeds N")
        from babysit.ensembles import ensemble as make_ensemble

        return make_ensemble(
            members,
            from_study=from_study,
            top=top,
            from_run=from_run,
            checkpoints=checkpoints,
            pick=pick,
            seeds=seeds,
            config=configs[0] if configs else None,
            out=out,
            average=average,
            distill=distill,
            temperature=temperature,
            alpha=alpha,
            device=device,
            quiet=quiet,
        )

    result = guard(go)
    typer.echo(str(result))
    typer.echo(f"ensemble dir: {result.dir}")
    if result.report is not None:
        typer.echo(f"report: {result.report}")
