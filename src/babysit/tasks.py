"""Task: what babysit needs to know about the user's work (model factory, data, loss).

A task is named in configs as a bundled name (``"digits-mlp"``), ``"pkg.module:fn"``
or ``"path/to/file.py:fn"``; ``fn(**options)`` returns a :class:`Task`.

This module does not import torch until a task is built or a penalty computed: config.py
reads ``TASKS`` (the one list of bundled task names) before torch loads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from babysit._registry import Registry, unknown_name
from babysit.errors import TaskError

if TYPE_CHECKING:  # torch is imported where it is used, so that importing tasks stays light
    import torch
    from torch import nn

__all__ = [
    "TASKS",
    "Task",
    "check_task_name",
    "get_task",
    "import_function",
    "l2_weights",
    "register_task",
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
            raise ValueError(f"Task.direction must be 'max' or 'min', got {self.direction!r}")
        if not callable(self.model_factory) or not callable(self.loss_fn):
            raise TypeError("Task.model_factory and Task.loss_fn must be callables")
        if self.ignore_index is not None and type(self.ignore_index) is not int:
            raise TypeError(f"Task.ignore_index must be an int or None, got {self.ignore_index!r}")
        if self.train_eval is None:
            self.train_eval = self.train


# --- bundled tasks and name resolution ----------------------------------------------

TaskBuilder = Callable[..., Task]
TASKS: Registry[TaskBuilder] = Registry("task", error=TaskError)


def register_task(name: str) -> Callable[[TaskBuilder], TaskBuilder]:
    """Register a bundled task builder under ``name`` (used as ``[task] name``)."""
    return TASKS.register(name)


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
    """Build a task by name: a bundled one, ``"pkg.module:fn"`` or ``"path/file.py:fn"``."""
    if check_task_name(name) in TASKS:
        if data_dir is not None:
            options["data_dir"] = data_dir
        builder = TASKS[name]
    else:
        builder = import_function(name)
    try:
        task = builder(**options)
    except TypeError as exc:
        raise TaskError(f"task {name!r}: cannot call it with options {options}: {exc}") from None
    if not isinstance(task, Task):
        raise TaskError(
            f"task {name!r} returned {type(task).__name__}, expected babysit.Task "
            "(return babysit.Task(model_factory=..., train=..., val=..., loss_fn=...))"
        )
    from babysit.splits import check_task

    check_task(task, where=f"task {name!r}")  # a split of the wrong type: DataError, one line
    return task


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


def import_function(spec: str, *, what: str = "task") -> Callable[..., Any]:
    """Import ``fn`` from ``"pkg.module:fn"`` or ``"path/to/file.py:fn"``; cwd is importable.

    ``what`` names the thing in the one-line TaskError (a task, a search objective).
    """
    import importlib
    import importlib.util
    import os
    import sys
    from pathlib import Path

    target, _, attr = spec.rpartition(":")
    if not target or not attr:
        raise TaskError(f"{what} {spec!r}: expected 'pkg.module:function' or 'file.py:function'")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        if target.endswith(".py"):
            path = Path(target)
            if not path.is_file():
                raise TaskError(f"{what} {spec!r}: file {target} not found")
            mod_spec = importlib.util.spec_from_file_location(f"_babysit_task_{path.stem}", path)
            if mod_spec is None or mod_spec.loader is None:
                raise TaskError(f"{what} {spec!r}: cannot load {target} as a Python module")
            module = importlib.util.module_from_spec(mod_spec)
            mod_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
    except TaskError:
        raise
    except Exception as exc:  # the user's module failed to import: say how
        raise TaskError(
            f"{what} {spec!r}: importing {target} failed: {type(exc).__name__}: {exc}"
        ) from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise TaskError(f"{what} {spec!r}: {target} has no function {attr!r}")
    return fn
