"""Diagnoses from the per-epoch scores (the notes' second plot: train vs validation accuracy).

They judge on the task's metric (accuracy: its gap and trend), with the losses as supporting
evidence, and use what the loop logs: ``val_acc`` alone (the README's loop), or also
``train_acc`` / ``train_loss`` / ``val_loss``. The batch losses stand in for the training
loss when no train score is logged.

- overfitting: validation falls away from its best while training keeps improving, or a
  train/val accuracy gap that is large and grew since the best epoch.
- underfitting: training accuracy stalls with validation right behind it and the training loss
  flat well above zero: the model cannot fit even the training set.
- labels_suspect: validation stays at chance while training fits -- the labels do not match
  the inputs, or validation comes from another distribution.
"""

from __future__ import annotations

import math
import statistics

from babysit.monitor._curve_rules import MIN_POINTS
from babysit.monitor._findings import Finding, diagnosis
from babysit.monitor._format import num, share
from babysit.monitor._history import RunHistory
from babysit.monitor._readings import (
    chance_accuracy,
    chunk_medians,
    late_fall,
    latest_loss,
    noise_level,
    reference,
    series,
)

__all__: list[str] = []

OVERFIT_ADVICE = (
    "increase regularization (stronger L2, dropout) or collect more data; stop early and"
    " keep the checkpoint with the best validation score"
)


def _mean_last(values: list[float], k: int = 3) -> float:
    return statistics.fmean(values[-k:])


def _training_falls(m: RunHistory) -> bool:
    """The training loss still falls over the last third (epoch train_loss, else batches)."""
    train = series(m, "train_loss")
    if len(train) >= 6:
        third = len(train) // 3
        return _mean_last(train) < statistics.fmean(train[-2 * third : -third])
    v = m.curve.values
    if len(v) < MIN_POINTS:
        return False
    c = chunk_medians(v, 6)
    return c[-1] < c[-3]


def _train_accuracy(m: RunHistory) -> tuple[float | None, str]:
    """Training accuracy: as logged (last 3 epochs), else a lower bound from the batch loss.

    For a cross-entropy loss L (the loss looks like one: it starts near ln C), every example
    the model gets wrong has p(true class) < 1/2 and adds more than ln 2 to the sum, so the
    error rate is at most L / ln 2 (a loss with a penalty added only loosens the bound).
    """
    tr = series(m, "train_acc")
    if tr:
        return _mean_last(tr), "train accuracy"
    loss = latest_loss(m)
    if loss is None or chance_accuracy(m) is None:
        return None, ""
    return max(0.0, 1.0 - loss / math.log(2)), "train accuracy (at least, from its loss)"


@diagnosis("overfitting")
def overfitting(
    m: RunHistory,
    *,
    drop: float = 0.03,
    gap: float = 0.1,
    rise: float = 0.1,
    jitter: float = 2.0,
    min_epochs: int = 5,
) -> list[Finding]:
    """Validation getting worse, or no better, while training goes on fitting
    (ends: means of the last 3 epochs).

    Judged on the accuracies, with the val loss as supporting evidence when logged:

    - val accuracy fell ``drop`` (and ``jitter`` x its epoch-to-epoch jitter) below its best
      while the training loss still falls; or
    - train accuracy (logged, else its cross-entropy bound) is ``gap`` above val accuracy,
      whose best is not in the last 3 epochs -- and, when val loss is logged, it rose
      ``rise`` above its best (val loss rising while val accuracy holds is the model growing
      confident; a gap while val still improves is training still paying off).
    """
    va, val_loss = series(m, "val_acc"), series(m, "val_loss")
    evidence: dict[str, float | int | str] = {}
    loss_rose = None
    if len(val_loss) >= min_epochs:
        end_loss, best_loss = _mean_last(val_loss), min(val_loss)
        loss_rose = end_loss > (1 + rise) * best_loss
        evidence.update(best_val_loss=best_loss, val_loss=end_loss)
    if len(va) >= min_epochs:
        best = max(range(len(va)), key=va.__getitem__)
        end = _mean_last(va)
        evidence.update(best_val_acc=va[best], best_epoch=best + 1, val_acc=end)
        fell = va[best] - end
        if (
            best < len(va) - 3
            and fell >= max(drop, jitter * noise_level(va))
            and loss_rose is not False
            and _training_falls(m)
        ):
            msg = (
                f"val accuracy fell from {va[best]:.1%} (epoch {best + 1}) to {end:.1%} while"
                " the training loss kept falling"
            )
            return [Finding("overfitting", "warning", m.last_step, msg, OVERFIT_ADVICE, evidence)]
        train, what = _train_accuracy(m)
        if train is not None and train - end >= gap and best < len(va) - 3 and loss_rose:
            evidence.update(train_acc=train, gap=train - end)
            msg = (
                f"{what} {train:.1%} is {train - end:.1%} above val accuracy {end:.1%}, which"
                f" peaked at epoch {best + 1}; val loss rose from {num(min(val_loss))} to"
                f" {num(_mean_last(val_loss))}"
            )
            return [Finding("overfitting", "warning", m.last_step, msg, OVERFIT_ADVICE, evidence)]
        return []
    if loss_rose and _training_falls(m):
        best = min(range(len(val_loss)), key=val_loss.__getitem__)
        end = _mean_last(val_loss)
        if best < len(val_loss) - 3 and end > (1 + 2.5 * rise) * val_loss[best]:
            msg = (
                f"val loss rose from {num(val_loss[best])} (epoch {best + 1}) to {num(end)}"
                " while the training loss kept falling"
            )
            return [Finding("overfitting", "warning", m.last_step, msg, OVERFIT_ADVICE, evidence)]
    return []


@diagnosis("labels_suspect")
def labels_suspect(
    m: RunHistory, *, margin: float = 0.15, fits: float = 0.8, min_epochs: int = 3
) -> list[Finding]:
    """Validation accuracy ends less than ``margin`` of the way from chance (1/C) to 1 while
    training fits: its loss fell below ``fits`` x its start, and (when logged) train accuracy
    is 2 x ``margin`` above val accuracy. Means of the last 3 epochs: with shuffled labels
    whole clusters of inputs land on one random class, so validation wanders around chance
    by more than its sampling noise.

    C is read from the chance loss, else the initial loss (ln C at a small init).
    """
    va, tr = series(m, "val_acc"), series(m, "train_acc")
    chance, ref = chance_accuracy(m), reference(m)
    if chance is None or ref is None or len(va) < min_epochs or len(m.curve) < MIN_POINTS:
        return []
    end_val = _mean_last(va)
    end_loss = chunk_medians(m.curve.values, 10)[-1]
    if end_val > chance + margin * (1 - chance) or end_loss >= fits * ref[0]:
        return []
    if tr and _mean_last(tr) - end_val < 2 * margin:
        return []
    said = f"train accuracy {_mean_last(tr):.1%}" if tr else f"training loss {num(end_loss)}"
    return [
        Finding(
            "labels_suspect",
            "error",
            m.last_step,
            f"validation accuracy stays at chance ({end_val:.1%}, chance {chance:.1%}) while"
            f" training fits ({said}, from {ref[1]})",
            "check that the labels match the inputs (the same order after shuffling or"
            " augmenting), and that the validation set comes from the same distribution and"
            " preprocessing as the training set",
            {"val_acc": end_val, "chance_acc": chance, "train_loss": end_loss},
        )
    ]


@diagnosis("underfitting")
def underfitting(
    m: RunHistory,
    *,
    gap: float = 0.15,
    plateau: float = 0.02,
    fitted: float = 0.3,
    flat: float = 0.02,
    min_epochs: int = 5,
) -> list[Finding]:
    """The model cannot fit the training set: train accuracy (else val accuracy) has stalled
    (gained < ``plateau`` over the last third of the epochs) with validation within ``gap`` of
    it, and the training loss has converged above ``fitted`` x chance: over the last third of
    the curve it fell less than ``flat`` of its level plus 3 standard errors of the batch noise
    (:func:`late_fall`). A flexible model keeps lowering its training loss (toward
    overfitting); one that cannot fit the data converges well above zero.
    """
    va, tr = series(m, "val_acc"), series(m, "train_acc")
    ref = reference(m)
    if len(va) < min_epochs or ref is None or len(m.curve) < MIN_POINTS:
        return []
    acc = tr if len(tr) == len(va) else va
    third = max(len(acc) // 3, 1)
    end_train, end_val = _mean_last(acc), _mean_last(va)
    fall, end, se = late_fall(m)
    if not (
        fall < flat * end + 3 * se
        and end > fitted * ref[0]
        and end_train - end_val < gap
        and acc[-1] - acc[-1 - third] < plateau
    ):
        return []
    what = "train accuracy" if acc is tr else "val accuracy"
    return [
        Finding(
            "underfitting",
            "warning",
            m.last_step,
            f"{what} stalled at {end_train:.1%} (val {end_val:.1%}) and the training loss is"
            f" flat at {num(end)} ({share(end / ref[0])} of {ref[1]})",
            "the model's capacity is too low: make it larger (more or wider hidden layers), or"
            " lower the regularization",
            {"train_acc": end_train, "val_acc": end_val, "loss": end},
        )
    ]
