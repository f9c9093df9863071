"""Hyperparameter search: spaces, Optuna studies, coarse -> fine stages, the search master.

The notes' "Hyperparameter optimization": random search on log scale, one validation
fold, coarse -> fine stages, and a warning when the best value sits on the border of its
range. Modules:

- ``dimensions.py`` — ``"loguniform(1e-6, 1e1)"`` strings -> ranges / choices -> Optuna
  distributions (the registry of distribution kinds)
- ``space.py``  — dotted config keys checked against the Config, the notes' defaults
  (both torch- and optuna-free at import: config.py validates spaces with them)
- ``study.py``  — the Optuna study: storage (journal file | sqlite | postgresql),
  samplers, pruners, the config kept in the study's user attributes; ``_retry.py`` /
  ``_rdb.py`` a database's calls retried with backoff, bounded; ``_journal.py`` the
  journal file sealed against a torn last line
- ``stages.py`` — pure: the next stage's ranges (zoom) and the border warnings
- ``trial.py``  — one trial: the objective, ``report(epoch, value)``, pruned / diverged
- ``objective.py`` — the default objective: ``babysit.train`` on the trial's config,
  every epoch reported
- ``slots.py``  — each stage's trials as seeded slots: enqueue, take, count, re-queue lost
- ``worker.py`` — ``babysit worker``: take waiting trials, run them, tell how they ended
- ``launch.py`` — the backends that run workers (local processes; ray actors:
  ``_ray_workers.py``)
- ``inputs.py`` — a search's input checked before anything is written
- ``progress.py`` — the search's event hooks and their rich rendering
- ``summary.py`` — the :class:`Study` result and ``summary.json``
- ``master.py`` — ``babysit.search()``: stage by stage, then ``summary.json``

This package's ``__init__`` imports nothing, so that ``babysit.config`` can import
``babysit.tuning.space`` without loading optuna or torch.
"""
