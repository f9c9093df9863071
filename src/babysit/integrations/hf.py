"""``babysit.integrations.hf.BabysitCallback``: the monitor, findings and report in a
Hugging Face ``Trainer`` fit.

One line added to the usual code::

    trainer = Trainer(model, args, train_dataset=..., callbacks=[BabysitCallback()])

What each event does:

- ``on_train_begin``: :func:`babysit.watch` on the ``model`` and ``optimizer`` of the
  callback's keyword arguments, in ``log_dir`` (default ``<args.output_dir>/babysit``), and a
  forward hook that keeps the loss the model returns in training mode (each micro-batch's);
  with ``sanity=True`` / ``gradcheck=True`` the checks on the first training batch (drawn
  with the random state restored afterwards; a short fit (``state.max_steps`` < 500) gets
  at least 10 capture windows, see ``Session.attach``; the loss: the model's returned loss, see
  :mod:`._views`). A failure writes the report and sets ``control.should_training_stop``:
  the ``Trainer`` stops after its current micro-batch, before a second optimizer step.
- ``on_step_end`` (once per optimizer step, after gradient accumulation): one record with
  the mean of the step's micro-batch losses. A model that returns no loss (a custom
  ``compute_loss``): the loss logged at ``on_log`` is recorded there instead.
- ``on_evaluate``: ``log_epoch`` with the metrics, ``eval_loss`` -> ``val_loss``,
  ``eval_accuracy`` -> ``val_acc`` (see :func:`~babysit.integrations._common.epoch_metrics`).
  For the monitor an epoch is then the stretch between evaluations; without evaluation
  (``eval_strategy="no"``) ``on_epoch_end`` ends one.
- ``on_train_end``: findings.json and report.html; the findings are logged (``babysit``
  logger, world process zero).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from babysit.integrations._common import Session, SessionOwner, missing_extra
from babysit.integrations._views import ReturnedLossView, loss_of, rows

try:
    from transformers import TrainerCallback
except ImportError:
    raise missing_extra("transformers", "hf", "babysit.integrations.hf") from None

__all__ = ["BabysitCallback"]

log = logging.getLogger("babysit")


def _unwrapped(optimizer: Any) -> torch.optim.Optimizer | None:
    """The torch optimizer inside accelerate's ``AcceleratedOptimizer`` (whose ``step`` calls
    it), where the monitor's step hooks go."""
    while isinstance(getattr(optimizer, "optimizer", None), torch.optim.Optimizer):
        optimizer = optimizer.optimizer
    return optimizer if isinstance(optimizer, torch.optim.Optimizer) else None


def _first_batch(loader: Any) -> Any:
    """The loader's first batch, with the random state the draw touched put back.

    Drawn from the torch DataLoader inside accelerate's wrapper, whose own iteration would
    register itself with accelerate's gradient state and, left unfinished, stay there. The
    sampler draws from the global generator (restored here) or reseeds its own per epoch.
    """
    base = getattr(loader, "base_dataloader", loader)
    with torch.random.fork_rng(devices=[]):
        batches = iter(base)
        try:
            return next(batches)
        finally:
            del batches


class BabysitCallback(SessionOwner, TrainerCallback):
    """Babysit a ``Trainer`` fit: ``Trainer(..., callbacks=[BabysitCallback()])``.

    log_dir: where metrics.jsonl, findings.json and report.html go (default
    ``<output_dir>/babysit``). sanity / gradcheck: run :func:`babysit.sanity_check` /
    :func:`babysit.gradcheck` on the first training batch; stop the fit when one fails.
    watch_options: passed to :func:`babysit.watch` (``every``, ``window``, ``chance_loss``,
    ...); an unknown one is a ConfigError here.
    """

    def __init__(
        self,
        log_dir: str | os.PathLike[str] | None = None,
        *,
        sanity: bool = False,
        gradcheck: bool = False,
        **watch_options: Any,
    ) -> None:
        self.session = Session(
            log_dir,
            sanity=sanity,
            gradcheck=gradcheck,
            options=watch_options,
            where="BabysitCallback",
        )
        self._hook: Any = None
        self._returned_loss = False  # the model's forward gave a loss at least once

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        model: nn.Module = kwargs["model"]
        default = os.path.join(args.output_dir or ".", "babysit")
        total = float(state.max_steps) if state.max_steps and state.max_steps > 0 else None
        optimizer = _unwrapped(kwargs.get("optimizer"))
        start = int(state.global_step or 0)  # a resumed fit
        self.session.attach(model, optimizer, default, total_steps=total, start_step=start)
        if self.session.wants_checks:  # on every process, so that every one stops
            failure = self._precheck(model, kwargs.get("train_dataloader"))
            if failure is not None:
                control.should_training_stop = True
                self._finish()
                log.error(
                    "babysit: training stops before its second step: %s\nreport: %s",
                    failure,
                    self.session.report or self.session.dir,
                )
                return control
        self._hook = model.register_forward_hook(self._keep_loss)  # after the checks' forwards
        return control

    def _precheck(self, model: nn.Module, loader: Any) -> str | None:
        batch = _first_batch(loader) if loader is not None else None
        if not isinstance(batch, Mapping) or not isinstance(batch.get("labels"), Tensor):
            self.session.checked = True
            return "BabysitCallback(sanity/gradcheck) needs batches with labels (a dict)"
        labels = batch["labels"]
        inputs = {
            k: v
            for k, v in batch.items()
            if k != "labels" and isinstance(v, Tensor) and v.shape[:1] == labels.shape[:1]
        }
        device = next(model.parameters()).device
        inputs = {k: v.to(device) for k, v in inputs.items()}
        view = ReturnedLossView(model, inputs, labels.to(device))
        return self.session.precheck(
            view, view.loss_fn, rows(len(labels), device), view.given_labels()
        )

    def _keep_loss(self, module: nn.Module, args: Any, output: Any) -> None:
        if module.training and (loss := loss_of(output)) is not None and loss.ndim == 0:
            self._returned_loss = True
            self.session.add_loss(loss)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.session.step()

    def on_log(
        self, args: Any, state: Any, control: Any, logs: Mapping[str, Any] | None = None, **kw: Any
    ) -> None:
        if not self._returned_loss and logs and "loss" in logs:
            self.session.add_loss(float(logs["loss"]))
            self.session.step()

    def on_evaluate(
        self,
        args: Any,
        state: Any,
        control: Any,
        metrics: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self.session.epoch(metrics or {})

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        strategy = getattr(args, "eval_strategy", "no")
        if getattr(strategy, "value", strategy) == "no":
            self.session.epoch({})

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._finish()

    def _finish(self) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        if self.session.finished:
            return
        self.session.finish()
        for line in self.session.summary():
            log.warning(line)
