"""The ``babysit`` command line: each command parses, calls one Python function, renders.

Exit codes (docs/reliability.md): 0 success; 1 a check failed or a run diverged; 2 bad
input or a refusing environment (one line on stderr naming the file, key and reason;
nothing half-written): a bad config, a damaged or locked run dir, a full disk, a file
that cannot be read or written; 3 an internal error (one line; the traceback goes to a
file, or to stderr with ``BABYSIT_DEBUG=1``); 130 interrupted. torch is imported only
after the config has been validated, so bad input is answered fast.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from babysit._cli_lines import OneLineGroup, bad_input_line
from babysit._crash import EXIT_INTERNAL, crash_line, debugging, set_debug
from babysit._render import print_report
from babysit.config import Config, load_config
from babysit.errors import ConfigError

if TYPE_CHECKING:  # torch loads only once the input is valid
    from babysit.training.run import Run


app = typer.Typer(
    name="babysit",
    help="Check the gradients, sanity-check the model, babysit the training of a PyTorch model.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=OneLineGroup,
)


@app.callback()
def _options(
    debug: Annotated[
        bool, typer.Option("--debug", help="On an error, also print its traceback.")
    ] = False,
) -> None:
    """Check the gradients, sanity-check the model, babysit the training of a PyTorch model."""
    set_debug(debug)  # the one switch with BABYSIT_DEBUG: babysit/_crash.py's debugging()


T = TypeVar("T")

ConfigArg = Annotated[Path | None, typer.Argument(help="TOML config file.", show_default=False)]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a config value: KEY=VALUE (repeatable).", metavar="K=V"),
]
OutOpt = Annotated[Path | None, typer.Option("--out", help="Run directory to write.")]
TaskOpt = Annotated[str | None, typer.Option("--task", help="Task name instead of a config.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")]
DeviceOpt = Annotated[
    str | None, typer.Option("--device", help="cpu or cuda (default: cuda when available).")
]


EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 1, 2, 130  # EXIT_INTERNAL: 3


def _fail(message: str, code: int = EXIT_BAD_INPUT) -> typer.Exit:
    one_line = " ".join(message.splitlines())  # a path or a user's message may hold newlines
    typer.echo(f"babysit: error: {one_line}", err=True)
    return typer.Exit(code)


def _crash(exc: BaseException) -> typer.Exit:
    """An exception nobody expected: one line and exit 3; the traceback to a file."""
    typer.echo(f"babysit: {crash_line(exc)}", err=True)
    return typer.Exit(EXIT_INTERNAL)


def _guard(fn: Callable[[], T]) -> T:
    """Run ``fn``; bad input becomes one line on stderr and exit code 2, a crash exit 3.

    Bad input includes the user's own code failing (a task, its model, its loss: the line
    says where; ``--debug`` adds the traceback), an allocation too large for this machine
    (the line says how much was asked) and a file that cannot be read or written.
    """
    try:
        return fn()
    except (typer.Exit, typer.Abort, typer.TyperException):  # already answered
        raise
    except KeyboardInterrupt:
        raise _fail("interrupted", EXIT_INTERRUPTED) from None
    except Exception as exc:
        line = bad_input_line(exc, debug=debugging())
        if line is not None:
            raise _fail(line) from None
        if isinstance(exc, OSError):  # the environment: a file that cannot be read or written
            where = f"{exc.filename}: " if exc.filename is not None else ""
            raise _fail(f"{where}{exc.strerror or exc}") from None
        raise _crash(exc) from None


def _resolve_config(config: Path | None, task: str | None, sets: list[str] | None) -> Config:
    if config is None and task is None:
        raise ConfigError("give a CONFIG file or --task NAME")
    overrides = list(sets or [])
    if task is not None:
        overrides.insert(0, f"task.name={json.dumps(task)}")  # a TOML basic string
    return load_config(config, overrides)


@app.command()
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

    run = _guard(go)
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


@app.command()
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
            raise _fail(str(exc), 1) from None

    typer.echo(_guard(go).text())


def _run_check(name: str, config: Path | None, task: str | None, sets: list[str] | None) -> None:
    from babysit.checks.gates import GATES

    def go() -> Any:
        cfg = _resolve_config(config, task, sets)
        from babysit.tasks import task_for

        return GATES[name].run(task_for(cfg), cfg)

    report = _guard(go)
    print_report(report, title=GATES[name].title)
    if not report.passed:
        raise typer.Exit(1)


@app.command()
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


@app.command()
def sanity(config: ConfigArg = None, task: TaskOpt = None, set_: SetOpt = None) -> None:
    """Sanity checks before training: chance loss, reg raises loss, overfit a tiny subset."""
    _run_check("sanity", config, task, set_)


@app.command("lr-find")
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

    result = _guard(go)
    typer.echo(str(result))
    typer.echo(f"plot: {result.files['plot']}")


@app.command()
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
    """Search CONFIG's [search.space] stage by stage; write the study dir and summary.json."""

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
            raise _fail(str(exc), 1) from None

    study = _guard(go)
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


@app.command()
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

    count = _guard(go)
    if not quiet:
        typer.echo(f"worker: {count} trial(s) run; the study is done")


def _print_trial(record: dict[str, Any]) -> None:
    typer.echo(
        f"trial {record['number']} (stage {record['stage']}): {record['state']} {record['value']}"
    )


@app.command()
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

    result = _guard(go)
    typer.echo(str(result))
    typer.echo(f"ensemble dir: {result.dir}")
    if result.report is not None:
        typer.echo(f"report: {result.report}")


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="A run, study or ensemble directory.")],
) -> None:
    """Write DIR/report.html: one self-contained page of a run, a study or an ensemble."""
    from babysit.report.html import write_report

    path = _guard(lambda: write_report(run_dir))
    typer.echo(f"report: {path}")


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except SystemExit as exc:
        sys.exit(exc.code)
    except KeyboardInterrupt:
        typer.echo("babysit: error: interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except Exception as exc:  # outside a command's guard (rendering a result): still one line
        sys.exit(_crash(exc).exit_code)
