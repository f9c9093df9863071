"""The exceptions babysit raises on bad input; the CLI turns each into one line and exit 2."""

from __future__ import annotations

__all__ = [
    "BabysitError",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "ReportError",
    "RunDirError",
    "TaskError",
    "UserCodeError",
]


class BabysitError(Exception):
    """Base class: a problem with what the user gave babysit (one line: what, where, why, fix)."""


class ConfigError(BabysitError, ValueError):
    """A config file or value is missing, malformed or out of range."""


class TaskError(BabysitError, ValueError):
    """A task name cannot be resolved, imported, or did not return a Task."""


class DataError(BabysitError, ValueError):
    """A data set cannot be read, is refused (untrusted pickle), or has the wrong shape."""


class CheckpointError(BabysitError, ValueError):
    """A checkpoint is missing, corrupt, or does not match the run."""


class ReportError(BabysitError, ValueError):
    """A report cannot be built: the dir or one of its files is missing or malformed."""


class UserCodeError(TaskError):
    """The user's own code (a task builder, its module, a model factory) raised or exited.

    The message is one line: whose code, where (module:function and line), the exception's
    type and message. ``traceback`` holds the full text, which ``babysit --debug`` prints.
    """

    def __init__(self, message: str, traceback: str = "") -> None:
        super().__init__(message)
        self.traceback = traceback


class RunDirError(BabysitError):
    """A run dir is in use by another process, damaged, or cannot be written (e.g. disk full)."""
