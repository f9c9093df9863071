"""``babysit demo``: the notes' whole recipe on one task, from gradient check to ensemble.

    from babysit.demo import run_demo

    result = run_demo(out="runs/demo", fast=True)
    print(result.text())          # each step's time and result, the three test accuracies

The steps are in :mod:`babysit.demo._steps` (``STEPS``), the configs in
:mod:`babysit.demo._recipe`, the run and ``demo.json`` in :mod:`babysit.demo._run`, the
page in :mod:`babysit.report._demo_page`.
"""

from babysit.demo._recipe import DATA_SETS, DEMO_CONFIG, recipe_config
from babysit.demo._run import DEMO_FILE, DemoResult, run_demo
from babysit.demo._steps import STEPS, CheckFailed

__all__ = [
    "DATA_SETS",
    "DEMO_CONFIG",
    "DEMO_FILE",
    "STEPS",
    "CheckFailed",
    "DemoResult",
    "recipe_config",
    "run_demo",
]
