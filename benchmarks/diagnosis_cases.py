"""The setups of benchmarks/diagnosis.py: data sets, models, optimizers, planted pathologies.

Everything here is what a user writes: scikit-learn's bundled and generated data sets (and
8x8 digit images for a convnet), ``nn.Sequential`` models with PyTorch's default init unless
a setup changes it, ``torch.optim`` optimizers. A :class:`Setup` is one recipe; each
pathology has two, on different data and optimizers, one in each half (``tune``: the
thresholds may be chosen on it; ``held_out``: only measured). Healthy setups use ordinary
good settings (Adam 1e-3..3e-3, SGD + momentum 0.01..0.05, batch sizes 16..128).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

Data = tuple[Tensor, Tensor, Tensor, Tensor, int]  # x_train, y_train, x_val, y_val, classes
Builder = Callable[[tuple[int, ...], int], nn.Module]  # (input shape, classes) -> model
MakeOptimizer = Callable[[Any], torch.optim.Optimizer]  # (parameters) -> optimizer


# --- data sets: (seed) -> standardised train / val tensors ---------------------------------
def _split(x: np.ndarray, y: np.ndarray, seed: int, *, train: int | None, shape: Any) -> Data:
    """Stratified 75 / 25 split fixed by ``seed``; features standardised on train."""
    rng = np.random.default_rng(seed)
    tr, va = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        cut = round(0.75 * len(idx))
        tr.append(idx[:cut])
        va.append(idx[cut:])
    i_tr, i_va = rng.permutation(np.concatenate(tr)), rng.permutation(np.concatenate(va))
    if train is not None:
        i_tr = i_tr[:train]
    mean, std = x[i_tr].mean(0), x[i_tr].std(0)
    x = (x - mean) / np.where(std < 1e-6, 1.0, std)

    def cut(i: np.ndarray) -> tuple[Tensor, Tensor]:
        xs = torch.tensor(x[i], dtype=torch.float32).reshape(-1, *shape)
        return xs, torch.tensor(y[i], dtype=torch.int64)

    (a, b), (c, d) = cut(i_tr), cut(i_va)
    return a, b, c, d, int(y.max()) + 1


def _sk(name: str, **kw: Any) -> Callable[[int], tuple[np.ndarray, np.ndarray]]:
    def load(seed: int) -> tuple[np.ndarray, np.ndarray]:
        import sklearn.datasets as ds

        fn = getattr(ds, name)
        if name.startswith("load_"):
            return fn(return_X_y=True)  # type: ignore[no-any-return]
        return fn(random_state=seed, **kw)  # type: ignore[no-any-return]

    return load


def _spiral(noise: float) -> Callable[[int], tuple[np.ndarray, np.ndarray]]:
    """The cs231n spiral: 3 arms of 200 points (noise: angular jitter)."""

    def load(seed: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(seed)
        xs, ys = [], []
        for j in range(3):
            r = np.linspace(0.0, 1.0, 200)
            t = np.linspace(4.0 * j, 4.0 * (j + 1), 200) + rng.standard_normal(200) * noise
            xs.append(np.c_[r * np.sin(t), r * np.cos(t)])
            ys.append(np.full(200, j))
        return np.concatenate(xs), np.concatenate(ys)

    return load


SOURCES: dict[str, tuple[Callable[[int], tuple[np.ndarray, np.ndarray]], tuple[int, ...]]] = {
    "digits": (_sk("load_digits"), (64,)),
    "digits-image": (_sk("load_digits"), (1, 8, 8)),
    "breast_cancer": (_sk("load_breast_cancer"), (30,)),
    "wine": (_sk("load_wine"), (13,)),
    "classification": (
        _sk(
            "make_classification",
            n_samples=2000,
            n_features=20,
            n_informative=8,
            n_classes=4,
            flip_y=0.05,
        ),
        (20,),
    ),
    "moons": (_sk("make_moons", n_samples=1200, noise=0.25), (2,)),
    "circles": (_sk("make_circles", n_samples=1200, noise=0.1, factor=0.5), (2,)),
    "spiral": (_spiral(0.2), (2,)),
}


def load(name: str, seed: int, train: int | None = None) -> Data:
    """Data set ``name`` split by ``seed`` (``train``: keep only that many training rows)."""
    source, shape = SOURCES[name]
    x, y = source(seed)
    return _split(np.asarray(x, dtype=np.float64), np.asarray(y), seed, train=train, shape=shape)


# --- models ----------------------------------------------------------------------------------
ACTS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}


def mlp(
    hidden: list[int],
    act: str = "relu",
    *,
    init: str = "default",
    scale: float = 1.0,
    bias: float | None = None,
    dropout: float = 0.0,
) -> Builder:
    """Linear / activation stack; ``init``: PyTorch's default, "he" or "xavier", times ``scale``."""

    def build(shape: tuple[int, ...], classes: int) -> nn.Module:
        widths = [math.prod(shape), *hidden]
        layers: list[nn.Module] = [nn.Flatten()]
        for a, b in itertools.pairwise(widths):
            fc = nn.Linear(a, b)
            if init == "he":
                nn.init.kaiming_normal_(fc.weight, nonlinearity="relu")
            elif init == "xavier":
                nn.init.xavier_normal_(fc.weight)
            with torch.no_grad():
                fc.weight.mul_(scale)
                if bias is not None:
                    fc.bias.fill_(bias)
            layers += [fc, ACTS[act]()]
            if dropout:
                layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(widths[-1], classes))
        return nn.Sequential(*layers)

    return build


class FunctionalMLP(nn.Module):
    """An MLP whose ReLUs are ``F.relu`` calls inside ``forward`` (no activation modules)."""

    def __init__(self, n_in: int, hidden: int, classes: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(n_in, hidden), nn.Linear(hidden, hidden)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(F.relu(self.fc2(F.relu(self.fc1(x.flatten(1))))))


def functional(hidden: int) -> Builder:
    return lambda shape, classes: FunctionalMLP(math.prod(shape), hidden, classes)


def convnet(channels: tuple[int, int] = (8, 16), hidden: int = 64, *, bias: float = 0.0) -> Builder:
    """Conv3x3-ReLU-Conv3x3-ReLU-MaxPool-Linear-ReLU-Linear on (C, H, W) images."""

    def build(shape: tuple[int, ...], classes: int) -> nn.Module:
        c, h, w = shape
        model = nn.Sequential(
            nn.Conv2d(c, channels[0], 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(channels[0], channels[1], 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(channels[1] * (h // 2) * (w // 2), hidden),
            nn.ReLU(),
            nn.Linear(hidden, classes),
        )
        if bias:
            for m in model:
                if isinstance(m, nn.Conv2d | nn.Linear) and m is not model[-1]:
                    nn.init.constant_(m.bias, bias)
        return model

    return build


def linear() -> Builder:
    return lambda shape, classes: nn.Sequential(nn.Flatten(), nn.Linear(math.prod(shape), classes))


# --- optimizers --------------------------------------------------------------------------------
def adam(lr: float = 1e-3, **kw: Any) -> MakeOptimizer:
    return lambda p: torch.optim.Adam(p, lr=lr, **kw)


def adamw(lr: float = 1e-3, weight_decay: float = 1e-2) -> MakeOptimizer:
    return lambda p: torch.optim.AdamW(p, lr=lr, weight_decay=weight_decay)


def sgd(lr: float, momentum: float = 0.9, **kw: Any) -> MakeOptimizer:
    return lambda p: torch.optim.SGD(p, lr=lr, momentum=momentum, **kw)


def rmsprop(lr: float = 1e-3) -> MakeOptimizer:
    return lambda p: torch.optim.RMSprop(p, lr=lr)


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
    Setup("digits mlp2 momentum", H, "digits", mlp([128, 64]), sgd(0.05), 64, log="full"),
    Setup("spiral mlp adam bs16", T, "spiral", mlp([100]), adam(3e-3), 16, 40, log="val"),
    Setup("spiral mlp2 momentum", H, "spiral", mlp([64, 64]), sgd(0.05), 32, 60),
    Setup("breast mlp adam bs16", T, "breast_cancer", mlp([64]), adam(), 16, 20, log="val"),
    Setup("breast mlp momentum", H, "breast_cancer", mlp([100]), sgd(0.01), 32, 30, log="full"),
    Setup("wine tanh momentum", T, "wine", mlp([32], "tanh"), sgd(0.01), 16, 30, log="full"),
    Setup("wine mlp adam bs16", H, "wine", mlp([64]), adam(), 16, 40, log="val"),
    Setup("classif mlp2 adam", T, "classification", mlp([128, 128]), adam(), 32, 15, log="full"),
    Setup("classif deep adamw", H, "classification", mlp([64] * 4), adamw(3e-3), 128, 20),
    Setup("moons mlp2 momentum", T, "moons", mlp([64, 64]), sgd(0.05), 32, 30, log="val"),
    Setup("moons mlp adam bs64", H, "moons", mlp([100]), adam(3e-3), 64, 40, log="full"),
    Setup("digits-image convnet adam", T, "digits-image", convnet(), adam(), 64, 8, log="full"),
    Setup("digits-image convnet momentum", H, "digits-image", convnet(), sgd(0.02), 32, 8),
    Setup("digits frozen first layer", T, "digits", mlp([256]), adam(), freeze_first=True),
    Setup(
        "digits F.relu nesterov wd",
        H,
        "digits",
        functional(128),
        sgd(0.05, nesterov=True, weight_decay=5e-4),
        log="val",
    ),
    Setup("circles tanh rmsprop", T, "circles", mlp([32, 32], "tanh"), rmsprop(), 32, 30),
    Setup("circles mlp2 adam bs128", H, "circles", mlp([64, 64]), adam(3e-3), 128, 60, log="val"),
]

DEEP_SIGMOID = mlp([64] * 11, "sigmoid")  # 12 Linear layers, default init: ~7x shrink each
PATHOLOGIES = [
    *_sick(
        "lr x100",
        "lr_too_high",
        Setup("digits mlp adam 0.1", T, "digits", mlp([100]), adam(0.1), log="full"),
        Setup("classif mlp2 adam 0.1", H, "classification", mlp([128, 128]), adam(0.1), 32, 15),
    ),
    *_sick(
        "lr /100",
        "lr_too_low",
        Setup("digits mlp adam 1e-5", T, "digits", mlp([100]), adam(1e-5), log="full"),
        Setup("digits mlp momentum 5e-4", T, "digits", mlp([100]), sgd(5e-4), log="val"),
        Setup("moons mlp2 momentum 5e-4", H, "moons", mlp([64, 64]), sgd(5e-4), 32, 30),
    ),
    *_sick(
        "lr x1e4 (diverges)",
        "diverged",
        Setup("digits mlp momentum 500", T, "digits", mlp([100]), sgd(500.0)),
        Setup("breast mlp momentum 100", H, "breast_cancer", mlp([100]), sgd(100.0), 32, 20),
    ),
    *_sick(
        "batch size 1-2",
        "loss_noisy",
        Setup("digits mlp adam bs2", T, "digits", mlp([100]), adam(), 2, 2, log="full"),
        Setup("classif mlp adam bs1", H, "classification", mlp([100]), adam(), 1, 1),
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
            "digits 100 rows mlp512x2", H, "digits", mlp([512, 512]), adam(), 16, 150, "val", 100
        ),
    ),
    *_sick(
        "linear model on nonlinear data (underfitting)",
        "underfitting",
        Setup("spiral linear adam", T, "spiral", linear(), adam(1e-2), 32, 40, log="full"),
        Setup("circles mlp width 2", H, "circles", mlp([2]), adam(1e-2), 32, 30, log="val"),
    ),
    *_sick(
        "12-layer sigmoid, default init (vanishing gradients)",
        "vanishing_gradients",
        Setup("digits momentum", T, "digits", DEEP_SIGMOID, sgd(0.05), 32, 10, log="full"),
        Setup("classif adam", H, "classification", DEEP_SIGMOID, adam(), 32, 10),
    ),
    *_sick(
        "relu bias -5 (dead units)",
        "dead_relu",
        Setup("digits mlp2 adam", T, "digits", mlp([100, 100], bias=-5.0), adam(), log="full"),
        Setup("digits-image convnet", H, "digits-image", convnet(bias=-3.0), sgd(0.02), 32, 8),
    ),
    *_sick(
        "init x10 (saturation)",
        "saturation",
        Setup("digits tanh adam", T, "digits", mlp([100], "tanh", scale=10.0), adam(), log="full"),
        Setup(
            "wine sigmoid momentum", H, "wine", mlp([64], "sigmoid", scale=10.0), sgd(0.05), 16, 30
        ),
    ),
    *_sick(
        "weight decay or L2 0.5 (regularisation too strong)",
        "reg_too_strong",
        Setup("digits sgd wd", T, "digits", mlp([100]), sgd(0.05, weight_decay=0.5), log="full"),
        Setup("moons adam l2 loss", H, "moons", mlp([64, 64]), adam(3e-3), 32, 30, l2=0.5),
    ),
    *_sick(
        "train labels shuffled",
        "labels_suspect",
        Setup(
            "digits mlp adam", T, "digits", mlp([256]), adam(), 32, 30, "full", shuffle_labels=True
        ),
        Setup(
            "digits-image convnet",
            H,
            "digits-image",
            convnet(),
            adam(),
            32,
            20,
            shuffle_labels=True,
        ),
    ),
    *_sick(
        "optimizer.zero_grad() forgotten",
        "grads_not_zeroed",
        Setup(
            "digits mlp momentum", T, "digits", mlp([100]), sgd(0.05), log="full", zero_grad=False
        ),
        Setup("classif mlp2 adam", H, "classification", mlp([64, 64]), adam(), zero_grad=False),
    ),
]
