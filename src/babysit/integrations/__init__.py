"""Babysit where users already train: one callback for PyTorch Lightning, one for Hugging Face.

    from babysit.integrations.lightning import Babysit          # pip install 'babysit[lightning]'
    from babysit.integrations.hf import BabysitCallback          # pip install 'babysit[hf]'

This package imports no framework (and ``import babysit`` does not import it); each adapter
module imports its own and, without it, raises :class:`MissingExtraError` naming the extra.
Both share :mod:`babysit.integrations._common` (the monitor, per-step records, epoch metrics,
the pre-training checks, the report) and :mod:`babysit.integrations._views` (the framework's
model and loss as the checks take them).
"""

from babysit.integrations._common import ChecksFailed, MissingExtraError

__all__ = ["ChecksFailed", "MissingExtraError"]
