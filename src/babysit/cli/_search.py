"""``babysit search`` (the master) and ``babysit worker``: the hyperparameter search."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from babysit.cli._app import (
    ConfigArg,
    QuietOpt,
    SetOpt,
    fail,
    guard,
)
from babysit.config import load_config
from babysit.errors import ConfigError


def search(
    config: ConfigArg = None,
    set_: SetOpt = None,
    out: Annotated[Path | None, typer.Option("--out", help="Study directory to write.")] = None,
    workers: Annotated[int, typer.Option("--workers", help="Worker processes (K >= 1).")] = 1,
    backend: Annotated[str, typer.Option("--backend", help="Workers: local or ray.")] = "local",
    address: Annotated[
        str | None, typer.Option("--address", help="ray: auto or HOST:PORT of the Ray head.")
    ] = None,
    storage: Annotated[
        str | None, typer.Option("--storage", help="sqlite:///... or postgresql://...")
    ] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the study in --out.")] = False,
    quiet: QuietOpt = False,
) -> None:
    """Search CONFIG's search.space stage by stage; write the study dir and summary.json."""

    def go() -> Any:
        if config is None and not resume:
            raise ConfigError("give a CONFIG file (or --resume --out DIR)")
        if config is None and set_:
            raise ConfigError("--set needs a CONFIG file (--resume alone keeps the study's)")
        cfg = load_config(config, set_ or []) if config is not None else None
        from babysit.tuning.launch import WorkerError
        from babysit.tuning.master import search as run_search
        from babysit.tuning.progress import SearchProgress

        try:
            return run_search(
                cfg,
                out=out,
                workers=workers,
                backend=backend,
                address=address,
                storage=storage,
                resume=resume,
                progress=None if quiet else SearchProgress(),
            )
        except WorkerError as exc:
            raise fail(str(exc), 1) from None

    study = guard(go)
    for w in study.border_warnings:
        last = w["stage"] == len(study.stages) - 1
        fix = "widen [search.space] and search again" if last else "the next stage searched past it"
        typer.echo(
            f"babysit: warning: stage {w['stage']}: the best {w['param']} ({w['value']:.3g}) "
            f"lies at the {w['side']} border of [{w['low']:g}, {w['high']:g}]: {fix}"
        )
    best, metric = study.best, study.study["metric"]
    if best["trial"] is None:
        typer.echo("babysit: no trial completed")
    else:
        params = "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in best["params"].items())  # fmt: skip
        typer.echo(f"best: trial {best['trial']}  {metric} {best['value']:.4f}  {params}")
        if best.get("final_params"):  # a pbt stage: the values it ended with
            final = "  ".join(f"{k}={v:.4g}" for k, v in best["final_params"].items())
            typer.echo(f"  (pbt: started with those, ended with {final})")
    for line in study.advice:  # e.g. every trial diverged: lower the lr range
        typer.echo(f"babysit: {line}")
    typer.echo(f"study dir: {study.dir}")
    if study.report is not None:
        typer.echo(f"report: {study.report}")


def worker(
    study: Annotated[Path | None, typer.Option("--study", help="A study dir.")] = None,
    storage: Annotated[str | None, typer.Option("--storage", help="The study's URL.")] = None,
    study_name: Annotated[str | None, typer.Option("--study-name", help="Its name.")] = None,
    parent: Annotated[int | None, typer.Option("--parent", hidden=True)] = None,
    quiet: QuietOpt = False,
) -> None:
    """Run trials of a study (its config and dir are in the study) until it is done."""

    def go() -> int:
        from babysit.tuning.worker import exit_with_parent, open_worker, study_address

        if parent is not None:
            exit_with_parent(parent)
        url, name = study_address(study, storage, study_name)
        runner = open_worker(url, name, bounded=parent is None)  # a master's: it bounds
        runner.queue.master = parent  # a local worker's trials are lost with its master
        return runner.run(on_trial=None if quiet else _print_trial)

    count = guard(go)
    if not quiet:
        typer.echo(f"worker: {count} trial(s) run; the study is done")


def _print_trial(record: dict[str, Any]) -> None:
    typer.echo(
        f"trial {record['number']} (stage {record['stage']}): {record['state']} {record['value']}"
    )
