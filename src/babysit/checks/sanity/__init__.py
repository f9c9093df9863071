"""Sanity checks before training: chance loss, regularisation raises the loss, overfit a subset.

Modules: ``examples`` (the examples each check draws, and the input checks), ``at_init``
(the registry and the two checks at init), ``overfit`` (overfit a tiny subset), ``report``
(the result types), ``check`` (the public functions).
"""

from babysit.checks.sanity.check import (
    CHANCE_REFERENCES,
    CHECKS,
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
    "Check",
    "SanityInputError",
    "SanityOptions",
    "SanityReport",
    "register_check",
    "sanity_check",
    "sanity_task",
]
