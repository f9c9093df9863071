"""The setups of benchmarks/diagnosis.py: healthy runs and planted pathologies, in two halves.

A :class:`Setup` is one recipe (data set, model, optimizer, batch size, epochs, what the loop
logs, the planted bug). Halves: ``tune`` -- the thresholds may be chosen on it (each
pathology on two or three setups); ``held_out`` -- only measured (one more setup per
pathology, and healthy setups, on data sets, models and optimizers the tune half does not
use in that combination). Healthy setups use ordinary good settings (Adam 1e-3..3e-3,
SGD + momentum 0.01..0.05, batch sizes 16..128, MLPs and convnets).
"""

from __future__ import annotations

from dataclasses import dataclass

from diagnosis_kit import (
    Builder,
    MakeOptimizer,
    adam,
    adamw,
    convnet,
    functional,
    linear,
    mlp,
    rmsprop,
    sgd,
)


# --- setups ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Setup:
    """One run recipe. ``codes``: the findings that name its pathology (empty: healthy).

    log: what the loop passes to ``log_epoch`` -- "val_acc" (the README's loop), "val"
    (val_loss, val_acc) or "full" (train_loss, train_acc measured on the epoch's batches, too).
    The planted bugs: ``zero_grad=False`` (never called), ``l2`` (added to the loss),
    ``shuffle_labels`` (train labels permuted), ``freeze_first`` (first layer frozen).
    """

    name: str
    half: str  # "tune" | "held_out"
    data: str
    model: Builder
    optimizer: MakeOptimizer
    batch_size: int = 32
    epochs: int = 10
    log: str = "val_acc"
    train_size: int | None = None
    codes: frozenset[str] = frozenset()
    zero_grad: bool = True
    l2: float = 0.0
    shuffle_labels: bool = False
    freeze_first: bool = False


def _sick(name: str, codes: str, *setups: Setup) -> list[Setup]:
    """The setups of one pathology (one or two per half), named and tagged with its codes."""
    named = frozenset(codes.split())
    return [
        Setup(**{**s.__dict__, "name": f"{name} / {s.name}", "codes": named})  # type: ignore[arg-type]
        for s in setups
    ]


T, H = "tune", "held_out"
HEALTHY = [
    Setup("digits mlp adam", T, "digits", mlp([100]), adam()),
    Setup("digits mlp2 momentum", T, "digits", mlp([128, 64]), sgd(0.05), 64, log="full"),
    Setup("spiral mlp adam bs16", T, "spiral", mlp([100]), adam(3e-3), 16, 40, log="val"),
    Setup("spiral mlp2 momentum", T, "spiral", mlp([64, 64]), sgd(0.05), 32, 60),
    Setup("breast mlp adam bs16", T, "breast_cancer", mlp([64]), adam(), 16, 20, log="val"),
    Setup("breast mlp momentum", T, "breast_cancer", mlp([100]), sgd(0.01), 32, 30, log="full"),
    Setup("wine tanh momentum", T, "wine", mlp([32], "tanh"), sgd(0.01), 16, 30, log="full"),
    Setup("wine mlp adam bs16", T, "wine", mlp([64]), adam(), 16, 40, log="val"),
    Setup("classif mlp2 adam", T, "classification", mlp([128, 128]), adam(), 32, 15, log="full"),
    Setup("classif deep adamw", T, "classification", mlp([64] * 4), adamw(3e-3), 128, 20),
    Setup("moons mlp2 momentum", T, "moons", mlp([64, 64]), sgd(0.05), 32, 30, log="val"),
    Setup("moons mlp adam bs64", T, "moons", mlp([100]), adam(3e-3), 64, 40, log="full"),
    Setup("digits-image convnet adam", T, "digits-image", convnet(), adam(), 64, 8, log="full"),
    Setup("digits-image convnet momentum", T, "digits-image", convnet(), sgd(0.02), 32, 8),
    Setup("digits frozen first layer", T, "digits", mlp([256]), adam(), freeze_first=True),
    Setup(
        "digits F.relu nesterov wd",
        T,
        "digits",
        functional(128),
        sgd(0.05, nesterov=True, weight_decay=5e-4),
        log="val",
    ),
    Setup("circles tanh rmsprop", T, "circles", mlp([32, 32], "tanh"), rmsprop(), 32, 30),
    Setup("circles mlp2 adam bs128", T, "circles", mlp([64, 64]), adam(3e-3), 128, 60, log="val"),
]

DEEP_SIGMOID = mlp([64] * 11, "sigmoid")  # 12 Linear layers, default init: ~7x shrink each
PATHOLOGIES = [
    *_sick(
        "lr x100",
        "lr_too_high",
        Setup("digits mlp adam 0.1", T, "digits", mlp([100]), adam(0.1), log="full"),
        Setup("classif mlp2 adam 0.1", T, "classification", mlp([128, 128]), adam(0.1), 32, 15),
    ),
    *_sick(
        "lr /100",
        "lr_too_low",
        Setup("digits mlp adam 1e-5", T, "digits", mlp([100]), adam(1e-5), log="full"),
        Setup("digits mlp momentum 5e-4", T, "digits", mlp([100]), sgd(5e-4), log="val"),
        Setup("moons mlp2 momentum 5e-4", T, "moons", mlp([64, 64]), sgd(5e-4), 32, 30),
    ),
    *_sick(
        "lr x1e4 (diverges)",
        "diverged lr_too_high",
        Setup("digits mlp momentum 500", T, "digits", mlp([100]), sgd(500.0)),
        Setup("breast mlp momentum 100", T, "breast_cancer", mlp([100]), sgd(100.0), 32, 20),
    ),
    *_sick(
        "batch size 1-2",
        "loss_noisy",
        Setup("digits mlp adam bs2", T, "digits", mlp([100]), adam(), 2, 2, log="full"),
        Setup("classif mlp adam bs1", T, "classification", mlp([100]), adam(), 1, 1),
    ),
    *_sick(
        "big net, no reg, few data (overfitting)",
        "overfitting",
        Setup(
            "classif 150 rows mlp512x2 adam",
            T,
            "classification",
            mlp([512, 512]),
            adam(),
            32,
            150,
            "full",
            150,
        ),
        Setup(
            "digits 100 rows mlp512x2", T, "digits", mlp([512, 512]), adam(), 16, 150, "val", 100
        ),
    ),
    *_sick(
        "linear model on nonlinear data (underfitting)",
        "underfitting",
        Setup("spiral linear adam", T, "spiral", linear(), adam(1e-2), 32, 40, log="full"),
        Setup("circles mlp width 2", T, "circles", mlp([2]), adam(1e-2), 32, 30, log="val"),
    ),
    *_sick(
        "12-layer sigmoid, default init (vanishing gradients)",
        "vanishing_gradients",
        Setup("digits momentum", T, "digits", DEEP_SIGMOID, sgd(0.05), 32, 10, log="full"),
        Setup("classif adam", T, "classification", DEEP_SIGMOID, adam(), 32, 10),
    ),
    *_sick(
        "relu bias -5 (dead units)",
        "dead_relu",
        Setup("digits mlp2 adam", T, "digits", mlp([100, 100], bias=-5.0), adam(), log="full"),
        Setup("digits-image convnet", T, "digits-image", convnet(bias=-3.0), sgd(0.02), 32, 8),
    ),
    *_sick(
        "init x10 (saturation)",
        "saturation",
        Setup("digits tanh adam", T, "digits", mlp([100], "tanh", scale=10.0), adam(), log="full"),
        Setup(
            "wine sigmoid momentum", T, "wine", mlp([64], "sigmoid", scale=10.0), sgd(0.05), 16, 30
        ),
    ),
    *_sick(
        "weight decay or L2 0.5 (regularisation too strong)",
        "reg_too_strong",
        Setup("digits sgd wd", T, "digits", mlp([100]), sgd(0.05, weight_decay=0.5), log="full"),
        Setup("moons adam l2 loss", T, "moons", mlp([64, 64]), adam(3e-3), 32, 30, l2=0.5),
    ),
    *_sick(
        "train labels shuffled",
        "labels_suspect",
        Setup(
            "digits mlp adam", T, "digits", mlp([256]), adam(), 32, 30, "full", shuffle_labels=True
        ),
        Setup(
            "digits-image convnet",
            T,
            "digits-image",
            convnet(hidden=128),
            adam(),
            32,
            30,
            shuffle_labels=True,
        ),
    ),
    *_sick(
        "optimizer.zero_grad() forgotten",
        "grads_not_zeroed",
        Setup(
            "digits mlp momentum", T, "digits", mlp([100]), sgd(0.05), log="full", zero_grad=False
        ),
        Setup("classif mlp2 adam", T, "classification", mlp([64, 64]), adam(), zero_grad=False),
    ),
]

# --- the held-out half: other data sets, models and optimizers; measured, never tuned on -------
HEALTHY += [
    Setup("blobs mlp adam", H, "blobs", mlp([64]), adam(), 32, 15),
    Setup("blobs mlp2 momentum bs64", H, "blobs", mlp([128, 64]), sgd(0.03), 64, 20, "full"),
    Setup("quantiles mlp2 adam", H, "quantiles", mlp([64, 64]), adam(3e-3), 32, 40, "val"),
    Setup("quantiles tanh2 adam bs16", H, "quantiles", mlp([64, 64], "tanh"), adam(3e-3), 16, 30),
    Setup("iris mlp adam bs16", H, "iris", mlp([32]), adam(3e-3), 16, 60, "val"),
    Setup("bars convnet adam", H, "bars", convnet(), adam(), 32, 8, "full"),
    Setup("bars convnet momentum bs64", H, "bars", convnet(), sgd(0.05), 64, 10, "val"),
    Setup(
        "classif8 mlp2 adamw bs128",
        H,
        "classification8",
        mlp([256, 128]),
        adamw(1e-3, 0.05),
        128,
        30,
        "full",
    ),
    Setup(
        "classif8 F.relu nesterov", H, "classification8", functional(128), sgd(0.02, nesterov=True)
    ),
]

PATHOLOGIES += [
    *_sick(
        "lr x100",
        "lr_too_high",
        Setup("classif8 mlp2 adam 0.1", H, "classification8", mlp([256, 128]), adam(0.1)),
    ),
    *_sick(
        "lr /100",
        "lr_too_low",
        Setup("quantiles mlp2 momentum 3e-4", H, "quantiles", mlp([64, 64]), sgd(3e-4), 32, 30),
    ),
    *_sick(
        "lr x1e4 (diverges)",
        "diverged lr_too_high",
        Setup("bars convnet momentum 500", H, "bars", convnet(), sgd(500.0), 64, 5, "val"),
    ),
    *_sick(
        "batch size 1-2",
        "loss_noisy",
        Setup("quantiles mlp2 adam bs2", H, "quantiles", mlp([64, 64]), adam(), 2, 2, "val"),
    ),
    *_sick(
        "big net, no reg, few data (overfitting)",
        "overfitting",
        Setup("blobs 150 rows mlp512x2", H, "blobs", mlp([512, 512]), adam(), 16, 100, "val", 150),
    ),
    *_sick(
        "linear model on nonlinear data (underfitting)",
        "underfitting",
        Setup("quantiles mlp width 3", H, "quantiles", mlp([3]), adam(1e-2), 32, 30, "full"),
    ),
    *_sick(
        "12-layer sigmoid, default init (vanishing gradients)",
        "vanishing_gradients",
        Setup("blobs rmsprop", H, "blobs", DEEP_SIGMOID, rmsprop(), 32, 10, "val"),
    ),
    *_sick(
        "relu bias -5 (dead units)",
        "dead_relu",
        Setup("blobs mlp2 momentum", H, "blobs", mlp([128, 128], bias=-5.0), sgd(0.03), 32, 10),
    ),
    *_sick(
        "init x10 (saturation)",
        "saturation",
        Setup("quantiles tanh adam", H, "quantiles", mlp([64], "tanh", scale=10.0), adam(), 32, 20),
    ),
    *_sick(
        "weight decay or L2 0.5 (regularisation too strong)",
        "reg_too_strong",
        Setup(
            "classif8 adam wd 0.5", H, "classification8", mlp([128]), adam(weight_decay=0.5), 32, 10
        ),
    ),
    *_sick(
        "train labels shuffled",
        "labels_suspect",
        Setup(
            "classif8 mlp adam",
            H,
            "classification8",
            mlp([512]),
            adam(),
            32,
            40,
            shuffle_labels=True,
        ),
    ),
    *_sick(
        "optimizer.zero_grad() forgotten",
        "grads_not_zeroed",
        Setup("bars convnet adam", H, "bars", convnet(), adam(), 32, 5, "val", zero_grad=False),
    ),
]
