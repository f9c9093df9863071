"""Gradient checks: analytic vs centered-difference gradients, per tensor, kink-aware, float64.

Modules, in the order a check runs: ``inputs`` (datapoints, float64 model, objective),
``evaluate`` (the objective at perturbed copies of one leaf), ``kinks`` (which branch each
non-differentiable op took), ``leaf`` (one leaf: differences, direction, subgradients),
``verdicts`` (every leaf -> rows with verdicts), ``report`` (the result types), ``check``
(the public functions).
"""

from babysit.checks.gradcheck.check import (
    DATAPOINTS,
    FLOOR,
    GradcheckReport,
    ParamCheck,
    gradcheck,
    gradcheck_fn,
    gradcheck_task,
    numerical_gradient,
    rel_error,
)

__all__ = [
    "DATAPOINTS",
    "FLOOR",
    "GradcheckReport",
    "ParamCheck",
    "gradcheck",
    "gradcheck_fn",
    "gradcheck_task",
    "numerical_gradient",
    "rel_error",
]
