"""Members from seeds: one config trained N times, ``train.seed`` = seed, seed + 1, ...

The notes' "same model, different initializations": the only difference between the
members is the seed (initial weights, data order, dropout masks). ``train.seed`` may
differ between the members of a population (``_population_members.PER_MEMBER_KEYS``), so
the N runs train at once as one population (``training/population.py``) where that
applies (:func:`population_why_not`), each member exactly as ``babysit.train`` would
train it alone; otherwise one ``babysit.train`` after another. Either way each seed
leaves a run dir ``<out>/members/seed<s>/`` and the member is its best checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from babysit.config import Config
from babysit.ensembles.members import MemberSpec, best_checkpoint
from babysit.errors import CheckpointError, ConfigError
from babysit.optim.rules import RULES
from babysit.tasks import Task
from babysit.training._population_log import member_dirs

__all__ = ["MEMBERS_DIR", "check_seeds", "population_why_not", "train_seeds"]

MEMBERS_DIR = "members"  # <out>/members/seed<s>/: the seeds' run dirs


def seed_names(config: Config, n: int) -> list[str]:
    return [f"seed{config.train.seed + i}" for i in range(n)]


def check_seeds(config: Config, n: int, out: Path) -> None:
    """N >= 1 and ``<out>/members/`` new: before anything is trained."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"--seeds {n!r}: give a whole number of members >= 1")
    if (out / MEMBERS_DIR).exists():
        raise ConfigError(
            f"--out {out}: holds {MEMBERS_DIR}/ already (seeds trained before); choose a new --out"
        )
    member_dirs(out / MEMBERS_DIR, n, seed_names(config, n))


def population_why_not(config: Config) -> str | None:
    """Why the seeds cannot train as one population (None: they can), as the search's
    population executor decides: a pure update rule, whole epochs, no pre-training check
    (a population skips them), and no averaged weights (the trainer keeps those)."""
    train = config.train
    if config.optim.rule not in RULES:
        return f"optim.rule = {config.optim.rule!r} has no pure update rule"
    if not float(train.epochs).is_integer():
        return f"train.epochs = {train.epochs}: a population trains whole epochs"
    if train.sanity or train.gradcheck:
        return "train.sanity / train.gradcheck: a population skips the pre-training checks"
    if getattr(train, "ema", 0) or getattr(train, "swa", False):  # keys of the EMA/SWA issue
        return "train.ema / train.swa: the trainer keeps the averaged weights"
    return None


def train_seeds(
    config: Config,
    n: int,
    out: Path,
    *,
    task: Task | None,
    direction: str,
    device: str | None,
    quiet: bool,
    say: Callable[[str], None],
) -> list[MemberSpec]:
    """Train ``config`` with N seeds under ``<out>/members/``; each seed's best checkpoint.

    A seed that left no checkpoint (it diverged in its first epoch) is left out, with a
    line said; CheckpointError when none is left.
    """
    names = seed_names(config, n)
    root = out / MEMBERS_DIR
    seeds = [config.train.seed + i for i in range(n)]
    why = population_why_not(config)
    if why is None:
        from babysit.training.population import train_population

        say(f"seeds: training {n} seeds of {config.task.name} at once (a population) -> {root}")
        result = train_population(
            config,
            [{"train.seed": s} for s in seeds],
            task=task,
            out=root,
            device=device,
            names=names,
        )
        for line in result.notes:
            say(line)
    else:
        from babysit.training.run import train

        say(f"seeds: training {n} seeds of {config.task.name} one after another ({why})")
        for seed, name in zip(seeds, names, strict=True):
            cfg = config.model_copy(deep=True)
            cfg.train.seed = seed
            train(cfg, task=task, out=root / name, device=device, quiet=quiet)
    members = []
    for name in names:
        run = (root / name).resolve()
        try:
            members.append(MemberSpec(best_checkpoint(run, direction), run, "seeds"))
        except CheckpointError:
            say(f"seeds: {name} left no checkpoint (it diverged in its first epoch): left out")
    if not members:
        raise CheckpointError(f"seeds: no seed of {root} left a checkpoint; lower optim.lr")
    return members
