"""``babysit.ensemble()``: gather the members, check them, predict, distil, write the dir.

Sources combine: the members are the union of a study's top trials, a run's checkpoints,
seeds trained now and checkpoint files or run dirs named one by one (a checkpoint named
twice counts once). Order of work:

1. every argument and every member is checked — sources, K, the out dir, the student
   config, each checkpoint loaded into its model, one task and one class count for all
   (the seeds' and the student's configs included, by building their untrained models) —
   and bad input raises ConfigError / CheckpointError before anything is written;
2. the seeds train (``seeds.py``), into ``<out>/members/``;
3. the members predict on validation and test (``predict.py``, ``evaluate.py``): each
   member's scores, the ensemble's, its gain over the mean member, and the ensemble of
   the best k members for k = 1..M (best-first by validation accuracy) as ``by_size``;
4. with a student config, the distilled and the labels-only students train
   (``distill.py``) and are scored the same way;
5. ``<out>/ensemble.json`` (``result.py``) and ``<out>/report.html``.

``out`` defaults to the study dir when a study is the only source (its page shows the
ensemble), else ``runs/ensemble-<YYYYmmdd-HHMMSS>``; it must be new, empty, or a study dir.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from babysit.config import Config, load_config
from babysit.ensembles import distill as distilling
from babysit.ensembles import members as sources
from babysit.ensembles.evaluate import evaluate_members, evaluate_model
from babysit.ensembles.loading import MemberLoader, check_compatible, num_classes
from babysit.ensembles.predict import AVERAGES, Predictor
from babysit.ensembles.result import Ensemble, relative, student_scores
from babysit.ensembles.seeds import check_seeds, train_seeds
from babysit.errors import ConfigError
from babysit.splits import first
from babysit.tasks import Task
from babysit.training.run import select_device
from babysit.training.rundir import check_new_run_dir
from babysit.tuning.summary import SUMMARY_FILE

__all__ = ["ensemble"]

PathLike = str | os.PathLike[str]
ConfigLike = PathLike | Mapping[str, Any] | Config


def _say(quiet: bool) -> Callable[[str], None]:
    if quiet:
        return lambda line: None
    from rich.console import Console

    console = Console(stderr=True, soft_wrap=True)
    return lambda line: console.print(f"babysit: {line}", highlight=False, markup=False)


def _pair(value: Any, count: Any, names: tuple[str, str]) -> None:
    """A source and its K come together."""
    if (value is None) != (count is None):
        given, missing = names if value is not None else names[::-1]
        raise ConfigError(f"{given} needs {missing}")


def _out_dir(out: PathLike | None, study: PathLike | None, only_study: bool) -> Path:
    """The ensemble dir, checked: new, empty, or a study dir (nothing is written here)."""
    if out is None:
        if only_study and study is not None:
            return Path(study)
        return Path("runs") / f"ensemble-{time.strftime('%Y%m%d-%H%M%S')}"
    path = Path(out)
    if (path / SUMMARY_FILE).is_file():
        return path
    if path.is_dir() and any(path.iterdir()):
        raise ConfigError(f"--out {path}: directory is not empty; choose a new --out (or a study)")
    check_new_run_dir(path)
    return path


def _unique(specs: Iterable[sources.MemberSpec]) -> list[sources.MemberSpec]:
    seen: dict[Path, sources.MemberSpec] = {}
    for spec in specs:
        seen.setdefault(spec.path.resolve(), spec)
    return list(seen.values())


def _untrained(loader: MemberLoader, config: Config, where: str) -> tuple[str, str, int]:
    """(where, task key, classes) of a config not trained yet: its model built at init."""
    task = loader.task(config)
    model = task.model_factory(config.model_table())
    return where, loader.task_key(config), num_classes(model, task, where)


def ensemble(
    members: PathLike | Iterable[PathLike] = (),
    *,
    from_study: PathLike | None = None,
    top: int | None = None,
    from_run: PathLike | None = None,
    checkpoints: int | None = None,
    pick: str = "best",
    seeds: int | None = None,
    config: ConfigLike | None = None,
    out: PathLike | None = None,
    average: str = "probs",
    distill: ConfigLike | None = None,
    temperature: float | None = None,
    alpha: float | None = None,
    task: Task | None = None,
    device: str | None = None,
    quiet: bool = False,
    report: bool = True,
) -> Ensemble:
    """Ensemble members from any of the sources, evaluate it, optionally distil it.

    members: checkpoint files or run dirs (a run dir: its best checkpoint).
    from_study + top: the best checkpoints of the study's ``top`` best complete trials of
    its last stage. from_run + checkpoints (+ pick "best" | "last"): checkpoints of a run.
    seeds + config: the config trained with ``seeds`` seeds. average: "probs" | "logits".
    distill: a student config (+ its [distill] table; temperature / alpha override it).
    task: a Task for every member (default: each run's config names it). device: "cpu" |
    "cuda" (default: cuda when available). Returns the :class:`Ensemble`; writes ``out``.
    """
    say = _say(quiet)
    AVERAGES.get_or_raise(average, where="--average")
    _pair(from_study, top, ("--from-study DIR", "--top K"))
    _pair(from_run, checkpoints, ("--from-run DIR", "--checkpoints K"))
    _pair(seeds, config, ("--seeds N", "a CONFIG to train"))
    named = (
        [Path(members)] if isinstance(members, str | os.PathLike) else [Path(p) for p in members]
    )
    if from_study is None and from_run is None and seeds is None and not named:
        raise ConfigError("no members: give --from-study, --from-run, --seeds or member paths")
    if distill is None and (temperature is not None or alpha is not None):
        raise ConfigError("--temperature / --alpha need --distill CONFIG")
    seed_config = None if config is None else load_config(config)
    student = (
        None
        if distill is None
        else distilling.load_student_config(distill, temperature=temperature, alpha=alpha)
    )
    only_study = from_run is None and seeds is None and not named
    out_dir = _out_dir(out, from_study, only_study)
    if seeds is not None and seed_config is not None:
        check_seeds(seed_config, seeds, out_dir)
    if student is not None:
        distilling.check_students(out_dir)
    dev = select_device(device or "auto")

    # 1. every member found, loaded and checked against the others
    loader = MemberLoader(task)
    specs: list[sources.MemberSpec] = []
    if from_study is not None and top is not None:
        specs += sources.from_study(Path(from_study), top=top)
    if from_run is not None and checkpoints is not None:
        specs += sources.from_run(
            Path(from_run), k=checkpoints, pick=pick, direction=loader.direction
        )
    specs += sources.explicit(named, direction=loader.direction)
    loaded = [loader.load(spec) for spec in _unique(specs)]
    pending = []
    if seed_config is not None:
        pending.append(_untrained(loader, seed_config, f"--seeds {config}"))
    if student is not None:
        pending.append(_untrained(loader, student[0], f"--distill {distill}"))
    check_compatible(loaded, pending)

    # 2. seeds; nothing was written before this point
    out_dir.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []

    def note(line: str) -> None:
        notes.append(line)
        say(line)

    if seeds is not None and seed_config is not None:
        seed_task = loader.task(seed_config)
        trained = train_seeds(
            seed_config,
            seeds,
            out_dir,
            task=task,
            direction=seed_task.direction,
            device=dev.type,
            quiet=quiet,
            say=note,
        )
        loaded += [loader.load(spec) for spec in _unique(trained)]

    # 3. predictions
    base = loader.config(loaded[0].spec.run_dir)
    first_task = loaded[0].task
    example = first(first_task.val, 2, name="val").read()[0]
    predictor = Predictor([m.model for m in loaded], dev, example=example)
    for line in predictor.notes:
        note(line)
    say(f"evaluating {len(loaded)} members on {dev.type}")
    batch = base.train.eval_batch_size
    scored, total, by_size = evaluate_members(loaded, predictor, average, batch)
    result = Ensemble(out_dir, scored, total, average, by_size, notes=notes)

    # 4. students
    if student is not None:
        name = "<given>" if isinstance(distill, Mapping | Config) else str(distill)
        result.distill = _distil(
            student, name, predictor, loader, average, out_dir, dev, batch, quiet=quiet, say=say
        )

    # 5. ensemble.json and the report
    result.write()
    if report:
        from babysit.report.html import write_report

        result.report = write_report(out_dir)
    say(f"ensemble of {len(scored)} written to {relative(out_dir / 'ensemble.json', Path.cwd())}")
    return result


def _distil(
    student: tuple[Config, distilling.DistillConfig],
    source: str,
    teacher: Predictor,
    loader: MemberLoader,
    how: str,
    out: Path,
    device: torch.device,
    batch: int,
    *,
    quiet: bool,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """Train both students, score each best checkpoint: ensemble.json's ``distill``."""
    config, table = student
    task = loader.task(config)
    dirs = distilling.train_students(
        config,
        table,
        teacher=teacher,
        average=how,
        out=out,
        task=task,
        device=device.type,
        quiet=quiet,
        say=say,
    )
    students = {}
    for name, run_dir in dirs.items():
        spec = sources.MemberSpec(
            sources.best_checkpoint(run_dir, task.direction), run_dir, "student"
        )
        scores = evaluate_model(loader.load(spec).model, task, device, batch)
        students[name] = student_scores(run_dir, out, scores)
    return {
        "temperature": table.temperature,
        "alpha": table.alpha,
        "config": source,
        "students": students,
    }
