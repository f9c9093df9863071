"""Model ensembles (the notes' last chapter): members, prediction, distillation.

    members.py   who the members are: a study's top trials, a run's checkpoints, files
    loading.py   each member's model built from its run's config and its checkpoint loaded
    seeds.py     one config trained with N seeds (a population where it applies)
    predict.py   all members' outputs in one vmapped pass; averaging probabilities or logits
    distill.py   "Dark Knowledge": a student trained on the ensemble's soft targets
    result.py    the Ensemble and its ensemble.json
    run.py       babysit.ensemble(): the order of work

The running average of the weights (EMA/SWA) is kept by the trainer (``train.ema``,
``train.swa``); its checkpoints are members like any other.
"""

from babysit.ensembles.result import Ensemble, MemberScore
from babysit.ensembles.run import ensemble

__all__ = ["Ensemble", "MemberScore", "ensemble"]
