"""The parts benchmarks/diagnosis.py builds its setups from: data sets, models, optimizers.

What a user writes: scikit-learn's bundled and generated data sets (and 8x8 digit images and
synthetic 12x12 bar images for a convnet), ``nn.Sequential`` models with PyTorch's default
init unless a setup changes it, ``torch.optim`` optimizers.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
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


def _bars(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """1200 12x12 images of one bar (horizontal, vertical, diagonal, anti-diagonal: the
    class), 5 to 9 pixels long at a random place, on Gaussian noise (sd 0.5)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 0.5, (1200, 12, 12))
    y = rng.integers(0, 4, 1200)
    steps = {0: (0, 1), 1: (1, 0), 2: (1, 1), 3: (1, -1)}
    for i, c in enumerate(y):
        dr, dc = steps[int(c)]
        length = int(rng.integers(5, 10))
        r0 = int(rng.integers(0, 13 - (length if dr else 1)))
        c0 = int(rng.integers(length - 1 if dc < 0 else 0, 13 - (length if dc > 0 else 1)))
        for k in range(length):
            x[i, r0 + dr * k, c0 + dc * k] += 2.0
    return x.reshape(1200, -1), y


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
    "iris": (_sk("load_iris"), (4,)),
    "blobs": (_sk("make_blobs", n_samples=1500, centers=5, n_features=10, cluster_std=7.0), (10,)),
    "quantiles": (_sk("make_gaussian_quantiles", n_samples=1500, n_features=6, n_classes=3), (6,)),
    "classification8": (
        _sk(
            "make_classification",
            n_samples=2400,
            n_features=30,
            n_informative=12,
            n_classes=8,
            n_clusters_per_class=1,
            flip_y=0.02,
        ),
        (30,),
    ),
    "bars": (_bars, (1, 12, 12)),
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
