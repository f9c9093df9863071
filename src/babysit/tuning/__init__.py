"""Hyperparameter search: spaces, Optuna studies, coarse -> fine stages, the search master.

The notes' "Hyperparameter optimization": random search on log scale, one validation
fold, coarse -> fine stages, and a warning when the best value sits on the border of its
range. Modules:

- ``space.py``  — ``"loguniform(1e-6, 1e1)"`` strings -> dimensions -> Optuna distributions
  (torch- and optuna-free at import: config.py validates spaces with it)
- ``study.py``  — the Optuna study: storage (journal file | sqlite | postgresql),
  samplers, pruners, the config kept in the study's user attributes
- ``stages.py`` — pure: the next stage's ranges (zoom) and the border warnings
- ``trial.py``  — one trial: the objective, ``report(epoch, value)``, pruned / diverged
- ``master.py`` — ``babysit.search()``: stage by stage, then ``summary.json``

This package's ``__init__`` imports nothing, so that ``babysit.config`` can import
``babysit.tuning.space`` without loading optuna or torch.
"""
