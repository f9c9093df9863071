"""Task: what babysit needs to know about the user's work (model factory, data, loss).

A task is named in configs as a bundled name (``"digits-mlp"``), ``"pkg.module:fn"``
or ``"path/to/file.py:fn"``; ``fn(**options)`` returns a :class:`Task`.

A config names code, so what it may name is narrow: a module outside Python's standard
library, imported as a script would import it, and in it a function that declares itself a
task, with ``@babysit.task`` or the return annotation ``-> babysit.Task``. Anything else
(``os:system``, ``subprocess:getoutput``, a class, a builtin) is refused before it is
called. Whatever the user's code raises while a task is built, or if it calls ``sys.exit``,
is answered by a one-line :class:`~babysit.errors.UserCodeError` saying where.

This module does not import torch until a task is built or a penalty computed: config.py
reads ``TASKS`` (the one list of bundled task names) before torch loads.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from babysit._memory import allocation_message
from babysit._registry import Registry, unknown_name
from babysit._taskcode import declares_task, describe, import_function, task
from babysit._usercode import wrap_user_call
from babysit.errors import BabysitError, ConfigError, DataError, TaskError

if TYPE_CHECKING:  # torch is imported where it is used, so that importing tasks stays light
    import torch
    from torch import nn

__all__ = [
    "TASKS",
    "Task",
    "check_task_name",
    "declares_task",
    "get_task",
    "import_function",
    "l2_weights",
    "register_task",
    "task",
    "task_for",
]

# train/val/test: (inputs, targets) tensors, a torch Dataset, or a DataLoader.
Split = Any
ModelFactory = Callable[[dict[str, Any]], "nn.Module"]
LossFn = Callable[["torch.Tensor", "torch.Tensor"], "torch.Tensor"]
RegFn = Callable[["nn.Module", float], "torch.Tensor"]


def l2_weights(model: nn.Module, strength: float) -> torch.Tensor:
    """L2 penalty ``strength * sum(w**2)`` over weight tensors (ndim >= 2; biases excluded)."""
    import torch

    weights = [p for p in model.parameters() if p.ndim >= 2]
    if not weights:
        ref = next(model.parameters(), None)
        return torch.zeros((), dtype=ref.dtype if ref is not None else torch.float32)
    total = torch.stack([w.pow(2).sum() for w in weights]).sum()
    return strength * total


@dataclass
class Task:
    """The user's work as babysit sees it.

    model_factory: ``(model_cfg) -> nn.Module``; model_cfg is the config's ``[model]`` table.
    train, val, test: ``(inputs, targets)`` tensors, a Dataset, or a DataLoader.
    loss_fn: ``(outputs, targets) -> scalar`` data loss (regularisation is added by babysit).
    reg_fn: ``(model, strength) -> scalar``; default :func:`l2_weights`.
    metric / direction: the score for checkpoints, search and ensembles ("acc", "max");
    ``metric="loss", direction="min"`` where accuracy means nothing (regression, ...).
    ignore_index: a target value that is not scored (a padding id the loss ignores);
    negative targets (torch's -100, nanoGPT's -1) never are.
    chance_loss: expected loss at init (else derived by the sanity check).
    train_eval: un-augmented view of train for checks (default: train).
    """

    model_factory: ModelFactory
    train: Split
    val: Split
    loss_fn: LossFn
    test: Split = None
    num_classes: int | None = None
    reg_fn: RegFn = l2_weights
    metric: str = "acc"
    direction: str = "max"
    chance_loss: float | None = None
    train_eval: Split = None
    ignore_index: int | None = None

    def __post_init__(self) -> None:
        if self.direction not in ("max", "min"):
            raise TaskError(f"Task.direction must be 'max' or 'min', got {self.direction!r}")
        for name in ("model_factory", "loss_fn", "reg_fn"):
            if not callable(getattr(self, name)):
                raise TaskError(
                    f"Task.{name} must be a callable, got {type(getattr(self, name)).__name__}"
                )
        if self.ignore_index is not None and type(self.ignore_index) is not int:
            raise TaskError(f"Task.ignore_index must be an int or None, got {self.ignore_index!r}")
        if self.train_eval is None:
            self.train_eval = self.train


# --- bundled tasks and name resolution ----------------------------------------------

TaskBuilder = Callable[..., Task]
TASKS: Registry[TaskBuilder] = Registry("task", error=TaskError)


def register_task(name: str) -> Callable[[TaskBuilder], TaskBuilder]:
    """Register a bundled task builder under ``name`` (used as ``[task] name``)."""
    return TASKS.register(name, wrap=task)


def _classifier_task(model: str, splits: Any, **task_kw: Any) -> Task:
    from torch import nn

    from babysit.models import build_model

    def factory(cfg: dict[str, Any]) -> nn.Module:
        return build_model(
            model, cfg, input_shape=splits.input_shape, num_classes=splits.num_classes
        )

    return Task(
        model_factory=factory,
        train=splits.train,
        val=splits.val,
        test=splits.test,
        loss_fn=nn.functional.cross_entropy,
        num_classes=splits.num_classes,
        **task_kw,
    )


@register_task("digits-softmax")
def digits_softmax(*, split_seed: int = 0) -> Task:
    """Linear softmax classifier on scikit-learn's 8x8 digits (64 features, 10 classes)."""
    from babysit.data import load_digits

    return _classifier_task("softmax", load_digits(seed=split_seed))


@register_task("digits-mlp")
def digits_mlp(*, split_seed: int = 0) -> Task:
    """MLP on scikit-learn's 8x8 digits; the demo's task."""
    from babysit.data import load_digits

    return _classifier_task("mlp", load_digits(seed=split_seed))


@register_task("digits-convnet")
def digits_convnet(*, split_seed: int = 0) -> Task:
    """Small conv-relu-pool net on the digits as 1x8x8 images."""
    from babysit.data import load_digits

    return _classifier_task("convnet", load_digits(seed=split_seed, image=True))


@register_task("spiral-mlp")
def spiral_mlp(*, split_seed: int = 0, n_per_class: int = 100, noise: float = 0.2) -> Task:
    """MLP on the classic 3-class 2-D spiral (not linearly separable)."""
    from babysit.data import make_spiral

    return _classifier_task(
        "mlp", make_spiral(n_per_class=n_per_class, noise=noise, seed=split_seed)
    )


@register_task("cifar10-convnet")
def cifar10_convnet(*, data_dir: str | None = None, split_seed: int = 0) -> Task:
    """Convnet on CIFAR-10 read from a local cifar-10-batches-py folder ([task] data_dir)."""
    from babysit.data import load_cifar10
    from babysit.errors import DataError

    if data_dir is None:
        raise DataError(
            "task cifar10-convnet needs [task] data_dir = the local cifar-10-batches-py folder"
        )
    return _classifier_task("convnet", load_cifar10(data_dir, seed=split_seed))


def check_task_name(name: str) -> str:
    """``name`` if it is bundled or ``"module:fn"``-shaped, else TaskError with the choices."""
    if name in TASKS or ":" in name:
        return name
    raise TaskError(
        unknown_name("task", name, TASKS.names())
        + " or 'pkg.module:function' / 'path/to/file.py:function'"
    )


def get_task(name: str, *, data_dir: str | None = None, **options: Any) -> Task:
    """Build a task by name: a bundled one, ``"pkg.module:fn"`` or ``"path/file.py:fn"``.

    A named function must declare itself a task (:func:`task`); what its code raises, or a
    ``sys.exit`` in it, becomes a one-line :class:`~babysit.errors.UserCodeError`.
    """
    if check_task_name(name) in TASKS:
        if data_dir is not None:
            options["data_dir"] = data_dir
        builder = TASKS[name]
        _check_bundled_options(name, builder, options)
    else:
        builder = import_function(name)
        if not declares_task(builder):
            raise TaskError(
                f"task {name!r}: {describe(builder)} does not declare itself a task, so babysit "
                "does not call it; fix: decorate your task function with @babysit.task (or "
                "annotate it '-> babysit.Task')"
            )
    try:
        inspect.signature(builder).bind(**options)
    except TypeError as exc:
        raise TaskError(f"task {name!r}: cannot call it with options {options}: {exc}") from None
    try:
        task = builder(**options)
    except BabysitError:
        raise  # babysit's own one-line answer (also when the user's code called babysit)
    except (Exception, SystemExit) as exc:
        error = _build_error(name, exc, bundled=name in TASKS)
        if error is None:
            raise
        raise error from exc
    if not isinstance(task, Task):
        raise TaskError(
            f"task {name!r} returned {type(task).__name__}, expected babysit.Task "
            "(return babysit.Task(model_factory=..., train=..., val=..., loss_fn=...))"
        )
    from babysit.splits import check_task

    check_task(task, where=f"task {name!r}")  # a split of the wrong type: DataError, one line
    return task


def _build_error(name: str, exc: BaseException, *, bundled: bool) -> BabysitError | None:
    """The one line for a task whose building failed: the memory it asked for, or the user's
    code; None for anything else a bundled task raised (babysit's own fault)."""
    memory = allocation_message(exc)
    if memory is not None:
        return DataError(f"task {name!r}: cannot allocate its data: {memory}")
    return None if bundled else wrap_user_call(exc, f"task {name!r}")


def _whole(task: str, key: str, value: Any, low: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ConfigError(
            f"task {task!r}: options.{key} = {value!r} is not an integer >= {low}; "
            f"fix: set task.options.{key} to an integer >= {low}"
        )


def _check_bundled_options(name: str, builder: TaskBuilder, options: dict[str, Any]) -> None:
    """Strict types for a bundled task's options (a seed of true or 1.5 is refused)."""
    allowed = [p for p in inspect.signature(builder).parameters]
    for key, value in options.items():
        if key not in allowed:
            raise ConfigError(
                f"task {name!r}: unknown option {key!r} = {value!r}; "
                f"allowed options: {', '.join(allowed) or 'none'}"
            )
        if key in ("split_seed", "n_per_class"):
            _whole(name, key, value, 0 if key == "split_seed" else 1)
        if key == "noise" and (
            not isinstance(value, int | float)
            or isinstance(value, bool)
            or not 0 <= value < math.inf
        ):
            raise ConfigError(
                f"task {name!r}: options.noise = {value!r} is not a finite number >= 0"
            )
        if key == "data_dir" and not isinstance(value, str):
            raise ConfigError(f"task {name!r}: data_dir = {value!r} is not a path (a string)")


class _TaskTable(Protocol):
    """What task_for reads: a config's [task] table (babysit.config.TaskConfig)."""

    @property
    def name(self) -> str: ...
    @property
    def data_dir(self) -> str | None: ...
    @property
    def options(self) -> dict[str, Any]: ...


class _HasTaskTable(Protocol):
    @property
    def task(self) -> _TaskTable: ...


def task_for(config: _HasTaskTable) -> Task:
    """The task a config's ``[task]`` table names (name, data_dir, options).

    ``config`` is a :class:`babysit.config.Config`; typed by what is read, since config.py
    imports this module (for ``TASKS``) and not the other way round.
    """
    return get_task(config.task.name, data_dir=config.task.data_dir, **config.task.options)
