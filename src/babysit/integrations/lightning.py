"""``babysit.integrations.lightning.Babysit``: the monitor, findings and report in a Lightning fit.

One line added to the usual code::

    trainer = L.Trainer(max_epochs=3, callbacks=[Babysit()])

What each hook does:

- ``on_fit_start``: :func:`babysit.watch` on the LightningModule and the trainer's first
  optimizer (a line says so when there are several), in ``log_dir`` (default: the trainer's
  ``log_dir``; with ``logger=False``, ``<default_root_dir>/babysit``).
  The epoch length in optimizer steps, ``ceil(batches / accumulate_grad_batches)``, gives
  batch records fractional epochs from the first step; a short fit (``estimated_stepping_
  batches`` < 500) gets at least 10 capture windows (see ``Session.attach``).
- ``on_train_batch_start`` (first batch, with ``sanity=True`` / ``gradcheck=True``): the
  checks on that batch, with ``training_step``'s loss (see :mod:`._views`); a failure writes
  the report and raises :class:`~babysit.integrations.ChecksFailed`, so no step is taken.
- ``on_train_batch_end``: the step's loss from ``outputs`` (un-normalised by
  ``accumulate_grad_batches``); one record per optimizer step, when ``global_step`` moves,
  with the mean loss of its micro-batches.
- ``on_train_epoch_end`` (after that epoch's validation): ``log_epoch`` with the logged
  ``trainer.callback_metrics`` (``val_acc``, ``val_loss``, ``val/acc`` ... see
  :func:`~babysit.integrations._common.epoch_metrics`).
- ``on_fit_end`` (and ``on_exception``): findings.json and report.html; the findings are
  printed through Lightning's rank-zero logging.

AMP (``precision="bf16-mixed"``, ``"16-mixed"``) and DDP need nothing more: the monitor reads
the unscaled parameters' updates from the optimizer's step hooks and logs on rank 0 only.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import torch

from babysit.integrations._common import ChecksFailed, Session, SessionOwner, missing_extra
from babysit.integrations._views import StepLossView, loss_of, rows

try:
    from lightning.pytorch import Callback
    from lightning.pytorch.utilities.rank_zero import rank_zero_info
except ImportError:
    raise missing_extra("lightning", "lightning", "babysit.integrations.lightning") from None

__all__ = ["Babysit"]


class Babysit(SessionOwner, Callback):
    """Babysit a Lightning fit: ``Trainer(callbacks=[Babysit()])``; see the module docstring.

    log_dir: where metrics.jsonl, findings.json and report.html go (default: above).
    sanity / gradcheck: run :func:`babysit.sanity_check` / :func:`babysit.gradcheck` on the
    first training batch before the first step; stop the fit when one fails.
    watch_options: passed to :func:`babysit.watch` (``every``, ``window``, ``chance_loss``,
    ``image_shape``, ``tensorboard``, ...); an unknown one is a ConfigError here.
    """

    def __init__(
        self,
        log_dir: str | os.PathLike[str] | None = None,
        *,
        sanity: bool = False,
        gradcheck: bool = False,
        **watch_options: Any,
    ) -> None:
        super().__init__()
        self.session = Session(
            log_dir, sanity=sanity, gradcheck=gradcheck, options=watch_options, where="Babysit"
        )
        self._stepped = 0  # trainer.global_step at the last record

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        optimizers: Sequence[torch.optim.Optimizer] = trainer.optimizers
        if len(optimizers) > 1:
            rank_zero_info(
                f"babysit: {len(optimizers)} optimizers; watching the first "
                f"({type(optimizers[0]).__name__}), whose steps the records count"
            )
        default = trainer.log_dir  # a collective under DDP: every rank asks
        if not trainer.loggers:  # logger=False: log_dir is the root dir itself
            default = os.path.join(trainer.default_root_dir, "babysit")
        total = trainer.estimated_stepping_batches  # sets the data up: known lengths from here
        batches = trainer.num_training_batches
        per_epoch = None
        if isinstance(batches, int) and batches > 0:
            per_epoch = math.ceil(batches / trainer.accumulate_grad_batches)
        optimizer = optimizers[0] if optimizers else None
        self.session.attach(
            pl_module,
            optimizer,
            default,
            steps_per_epoch=per_epoch,
            total_steps=float(total),
            start_step=trainer.global_step,
        )
        self._stepped = trainer.global_step

    def on_train_batch_start(
        self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int
    ) -> None:
        if not self.session.wants_checks:
            return
        failure = self._precheck(pl_module, batch) if trainer.is_global_zero else None
        self.session.checked = True  # on every rank: one broadcast each, below
        failure = trainer.strategy.broadcast(failure)  # every rank stops, or none
        if failure is not None:
            self.session.finish()
            self._print()
            raise ChecksFailed(
                f"babysit: the fit stopped before its first step: {failure}\n"
                f"report: {self.session.report or self.session.dir}"
            )

    def _precheck(self, pl_module: Any, batch: Any) -> str | None:
        if not (isinstance(batch, list | tuple) and len(batch) == 2):
            self.session.checked = True
            return (
                "Babysit(sanity/gradcheck) needs batches (inputs, targets); "
                f"the first batch is a {type(batch).__name__}"
            )
        x, y = batch
        view = StepLossView(pl_module, x)
        return self.session.precheck(view, view.loss_fn, rows(len(x), x.device), y)

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = loss_of(outputs)
        if loss is not None:
            # automatic optimisation divides the loss by accumulate_grad_batches for backward
            k = trainer.accumulate_grad_batches if pl_module.automatic_optimization else 1
            self.session.add_loss(loss * k if k != 1 else loss)
        if trainer.global_step > self._stepped:  # the optimizer stepped on this batch
            self._stepped = trainer.global_step
            self.session.step()

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        self.session.epoch(trainer.callback_metrics)

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        if not self.session.finished:
            self.session.finish()
            self._print()

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        if not self.session.finished:  # what was recorded up to the crash, and its report
            self.session.finish()
            self._print()

    def _print(self) -> None:
        for line in self.session.summary():
            rank_zero_info(line)
