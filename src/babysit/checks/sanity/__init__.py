"""Sanity checks before training: chance loss, regularisation raises the loss, overfit a subset.

Modules: ``inputs`` (the examples each check reads, through :mod:`babysit.splits`, and the
input checks), ``chance`` (the loss at chance, also the trainer's), ``at_init`` (the context
every check reads and the two checks at init), ``overfit`` (overfit a tiny subset),
``report`` (the result types), ``check`` (the registry, in the notes' order, and the public
functions).
"""

from babysit.checks.sanity.chance import CHANCE_REFERENCES
from babysit.checks.sanity.check import (
    CHECKS,
    ORDER,
    Check,
    SanityInputError,
    SanityOptions,
    SanityReport,
    register_check,
    sanity_check,
    sanity_task,
)

__all__ = [
    "CHANCE_REFERENCES",
    "CHECKS",
    "ORDER",
    "Check",
    "SanityInputError",
    "SanityOptions",
    "SanityReport",
    "register_check",
    "sanity_check",
    "sanity_task",
]
