"""babysit: check the gradients, sanity-check the model, babysit the training.

The public API is listed in ``__all__``. Names load lazily (PEP 562), so that
``import babysit.config`` and the command line answer bad input before torch loads.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from babysit.errors import (
    BabysitError,
    CheckpointError,
    ConfigError,
    DataError,
    ReportError,
    TaskError,
    UserCodeError,
)

if TYPE_CHECKING:
    from babysit.checks.gradcheck import (
        GradcheckReport,
        ParamCheck,
        gradcheck,
        gradcheck_fn,
        gradcheck_task,
        numerical_gradient,
        rel_error,
    )
    from babysit.checks.sanity import (
        Check,
        SanityInputError,
        SanityReport,
        sanity_check,
        sanity_task,
    )
    from babysit.config import Config, load_config
    from babysit.ensembles import Ensemble, ensemble
    from babysit.monitor.watch import Monitor, watch
    from babysit.report.html import write_report
    from babysit.tasks import Task, get_task, l2_weights, task
    from babysit.training.run import Run, train
    from babysit.tuning.master import search
    from babysit.tuning.summary import Study

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY: dict[str, str] = {
    "Config": "babysit.config",
    "load_config": "babysit.config",
    "Task": "babysit.tasks",
    "get_task": "babysit.tasks",
    "l2_weights": "babysit.tasks",
    "task": "babysit.tasks",
    "Run": "babysit.training.run",
    "train": "babysit.training.run",
    "rel_error": "babysit.checks.gradcheck",
    "numerical_gradient": "babysit.checks.gradcheck",
    "gradcheck_fn": "babysit.checks.gradcheck",
    "gradcheck": "babysit.checks.gradcheck",
    "gradcheck_task": "babysit.checks.gradcheck",
    "GradcheckReport": "babysit.checks.gradcheck",
    "ParamCheck": "babysit.checks.gradcheck",
    "sanity_check": "babysit.checks.sanity",
    "sanity_task": "babysit.checks.sanity",
    "SanityInputError": "babysit.checks.sanity",
    "SanityReport": "babysit.checks.sanity",
    "Check": "babysit.checks.sanity",
    "watch": "babysit.monitor.watch",
    "Monitor": "babysit.monitor.watch",
    "write_report": "babysit.report.html",
    "search": "babysit.tuning.master",
    "ensemble": "babysit.ensembles",
    "Ensemble": "babysit.ensembles",
    "Study": "babysit.tuning.summary",
}
_SUBMODULES = ("config", "data", "models", "tasks", "optim", "errors")

__all__ = [
    "BabysitError",
    "Check",
    "CheckpointError",
    "Config",
    "ConfigError",
    "DataError",
    "Ensemble",
    "GradcheckReport",
    "Monitor",
    "ParamCheck",
    "ReportError",
    "Run",
    "SanityInputError",
    "SanityReport",
    "Study",
    "Task",
    "TaskError",
    "UserCodeError",
    "ensemble",
    "get_task",
    "gradcheck",
    "gradcheck_fn",
    "gradcheck_task",
    "l2_weights",
    "load_config",
    "numerical_gradient",
    "rel_error",
    "sanity_check",
    "sanity_task",
    "search",
    "task",
    "train",
    "watch",
    "write_report",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"babysit.{name}")
    raise AttributeError(f"module 'babysit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*__all__, *_SUBMODULES])
