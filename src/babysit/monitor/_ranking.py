"""Which finding to act on first: root causes before what they explain, one lr direction.

The rules fire independently, so one problem shows up several times: dead ReLUs also stop the
updates (``update_ratio_low``) and leave the loss at chance (``not_learning``). :func:`rank`
turns the rules' findings into what findings.json holds:

1. After a divergence (a NaN / inf loss) only the divergence, with what led to it, and the
   wiring bugs that explain it stand; every other reading is of the wreck.
2. A finding is dropped when a warning or error that explains it is present
   (:data:`EXPLAINED_BY`); the cause's ``evidence["explains"]`` lists the codes it absorbed.
   Dead or saturated units that appeared during training (not at initialisation) are
   themselves explained by a too-high learning rate; a penalty that collapsed the weights
   explains a stall with large update ratios.
3. The rest is ordered by :data:`TIERS` -- wiring bugs, divergence, structural causes, a
   batch too small to read the curve, the learning rate, the fit, generic symptoms -- then
   errors before warnings, then by step; ``info`` findings come last. The first finding is
   the one to act on.

Together with (2), lr advice never points both ways: ``lr_too_high`` / ``update_ratio_high``
explain (and so remove) ``lr_too_low`` / ``update_ratio_low``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from babysit.monitor._findings import Finding

__all__ = ["AFTER_DIVERGENCE", "EXPLAINED_BY", "TIERS", "order_key", "rank", "tier"]

TIERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("wiring", ("grads_not_zeroed", "labels_suspect")),
    ("divergence", ("diverged",)),
    (
        "structure",
        ("dead_relu", "saturation", "vanishing_gradients", "exploding_gradients", "reg_too_strong"),
    ),
    ("batch", ("loss_noisy",)),
    ("learning rate", ("lr_too_high", "lr_too_low", "update_ratio_high", "update_ratio_low")),
    ("fit", ("overfitting", "underfitting")),
    ("generic", ("not_learning", "frozen_parameters")),
)
_TIER = {code: i for i, (_, codes) in enumerate(TIERS) for code in codes}
_PLACE = {code: i for i, code in enumerate(c for _, codes in TIERS for c in codes)}

_ROOT = frozenset({"grads_not_zeroed", "labels_suspect", "diverged"})
_STRUCTURE = frozenset(TIERS[2][1])  # the tier after wiring and divergence
_HIGH = frozenset({"lr_too_high", "update_ratio_high"})
_LOW = frozenset({"lr_too_low", "update_ratio_low"})
# what survives a divergence (besides info findings)
AFTER_DIVERGENCE = frozenset({"diverged", "grads_not_zeroed"})

# consequence -> the causes that explain it (and make it redundant)
EXPLAINED_BY: dict[str, frozenset[str]] = {
    "not_learning": frozenset(_TIER) - {"not_learning", "loss_noisy", "frozen_parameters"},
    "update_ratio_low": _ROOT | _STRUCTURE | _HIGH | {"lr_too_low", "overfitting"},
    "update_ratio_high": _ROOT | _STRUCTURE | {"lr_too_high"},
    "lr_too_low": _ROOT | _STRUCTURE | _HIGH,
    "lr_too_high": frozenset({"grads_not_zeroed", "diverged"}),
    "loss_noisy": _ROOT | _HIGH,
    "overfitting": frozenset({"grads_not_zeroed", "labels_suspect", "diverged", "lr_too_high"}),
    "underfitting": _ROOT | _STRUCTURE | _HIGH | _LOW,
    "vanishing_gradients": _ROOT | {"dead_relu", "saturation", "reg_too_strong"},
    "exploding_gradients": frozenset({"grads_not_zeroed", "diverged"}),
    "dead_relu": frozenset({"grads_not_zeroed"}),
    "saturation": frozenset({"grads_not_zeroed"}),
    "reg_too_strong": frozenset({"grads_not_zeroed", "labels_suspect", "diverged"}),
    "labels_suspect": frozenset({"grads_not_zeroed", "diverged"}),
    "frozen_parameters": frozenset(),
    "grads_not_zeroed": frozenset(),
    "diverged": frozenset(),
}
_DURING_TRAINING = frozenset({"dead_relu", "saturation"})  # explained by _HIGH unless at init
# (cause, effect) pairs that hold for some readings only: the effect's evidence decides
_CONDITIONAL: dict[tuple[str, str], Callable[[Finding], bool]] = {
    # collapsed weights make every update large next to them: a stall with large updates is
    # the penalty's doing, an exploding or bouncing loss is not
    ("reg_too_strong", "lr_too_high"): lambda f: f.evidence.get("shape") == "stalled",
}


def tier(code: str) -> int:
    """The position of ``code``'s tier in :data:`TIERS` (unknown codes last)."""
    return _TIER.get(code, len(TIERS))


def _explains(cause: Finding, effect: Finding) -> bool:
    if cause is effect or cause.severity == "info":
        return False
    effect_late = effect.code in _DURING_TRAINING and not effect.evidence.get("at_init", True)
    if effect_late and cause.code in _HIGH:
        return True  # units killed / pinned by a too-high lr: the lr is the cause
    cause_late = cause.code in _DURING_TRAINING and not cause.evidence.get("at_init", True)
    if cause_late and effect.code in _HIGH:
        return False  # ...and then they do not explain the lr findings away
    condition = _CONDITIONAL.get((cause.code, effect.code))
    if condition is not None:
        return condition(effect)
    return cause.code in EXPLAINED_BY.get(effect.code, frozenset())


def rank(findings: Iterable[Finding]) -> list[Finding]:
    """Drop what a present cause explains (or a divergence makes moot); order the rest."""
    found = list(findings)
    if any(f.code == "diverged" for f in found):
        found = [f for f in found if f.code in AFTER_DIVERGENCE or f.severity == "info"]
    kept: list[Finding] = []
    for effect in found:
        causes = [c for c in found if _explains(c, effect)]
        if not causes:
            kept.append(effect)
            continue
        for cause in causes:
            explained = cause.evidence.setdefault("explains", [])
            if effect.code not in explained:
                explained.append(effect.code)
    return sorted(kept, key=order_key)


def order_key(f: Finding) -> tuple[bool, int, int, int, int]:
    """Warnings and errors before info; then by tier, errors first, the order of
    :data:`TIERS` within the tier, earlier step."""
    step = f.step if f.step is not None else -1
    return (f.severity == "info", tier(f.code), -f.rank, _PLACE.get(f.code, len(_PLACE)), step)
