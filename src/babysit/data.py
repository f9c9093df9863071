"""Bundled data sets (digits, spiral), the CIFAR-10 python-pickle folder, and their splits.

Every loader returns :class:`Splits`: train / val / test ``(inputs, targets)`` tensors with
float32 inputs and int64 targets. A split depends on ``seed`` and the fractions only, so the
same seed gives identical tensors on every machine.

The notes: tune hyperparameters on the validation fold; the test split is for the final
evaluation only, once, and never for selection (no early stopping, search or ensembling on it).
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from babysit._cifar_pickle import CifarUnpickler, Refused
from babysit._memory import check_fits
from babysit.errors import ConfigError, DataError

__all__ = ["Splits", "load_cifar10", "load_digits", "make_spiral"]

# A feature whose train std is below this is (near) constant: it is centred, not scaled,
# so a constant pixel neither divides by zero nor blows val/test values up (as StandardScaler).
_STD_FLOOR = 1e-6


@dataclass(frozen=True)
class Splits:
    """Train / val / test ``(inputs, targets)``; select on val, report test once at the end.

    ``input_shape`` is one example's shape (no batch dimension); targets are class indices
    in ``[0, num_classes)``.
    """

    train: tuple[Tensor, Tensor]
    val: tuple[Tensor, Tensor]
    test: tuple[Tensor, Tensor]
    num_classes: int
    input_shape: tuple[int, ...]


def _check_fractions(where: str, val_fraction: float, test_fraction: float) -> None:
    for key, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise ConfigError(
                f"{where}: {key}={value!r} is out of range; use a fraction in [0, 1), e.g. 0.2"
            )
    if val_fraction + test_fraction >= 1.0:
        raise ConfigError(
            f"{where}: val_fraction + test_fraction = {val_fraction + test_fraction:g} leaves"
            " no training data; make their sum < 1"
        )


def _stratified_split(
    y: np.ndarray, *, val_fraction: float, test_fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of train / val / test: each class split in the given proportions, then shuffled.

    Per class c with n_c examples: round(test_fraction n_c) go to test, round(val_fraction n_c)
    to val, the rest to train; each split's order is a fresh permutation (not class-sorted).
    """
    parts: tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]] = ([], [], [])
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_test = round(test_fraction * len(idx))
        n_val = round(val_fraction * len(idx))
        parts[2].append(idx[:n_test])
        parts[1].append(idx[n_test : n_test + n_val])
        parts[0].append(idx[n_test + n_val :])
    train, val, test = (rng.permutation(np.concatenate(p)) for p in parts)
    return train, val, test


def _standardise(
    x: np.ndarray, train_idx: np.ndarray, axis: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std over ``axis`` of the TRAIN rows only (float64, keepdims, std floored)."""
    train = x[train_idx].astype(np.float64)
    mean = train.mean(axis=axis, keepdims=True)
    std = train.std(axis=axis, keepdims=True)
    return mean, np.where(std < _STD_FLOOR, 1.0, std)


def _as_splits(
    x: np.ndarray,
    y: np.ndarray,
    indices: tuple[np.ndarray, np.ndarray, np.ndarray],
    *,
    num_classes: int,
    shape: tuple[int, ...],
) -> Splits:
    """Cut float x (N, F) and int y (N,) into Splits, reshaping inputs to (n, *shape)."""
    train, val, test = (
        (
            torch.from_numpy(np.ascontiguousarray(x[i], dtype=np.float32)).reshape(-1, *shape),
            torch.from_numpy(y[i].astype(np.int64)),
        )
        for i in indices
    )
    return Splits(train, val, test, num_classes=num_classes, input_shape=shape)


def load_digits(
    *,
    seed: int = 0,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    image: bool = False,
) -> Splits:
    """scikit-learn's bundled 8x8 digits (1797 images, 10 classes), split and standardised.

    The split is stratified by class and fixed by ``seed`` and the fractions. Each of the 64
    pixels is standardised with the TRAIN mean and std, x' = (x - mu_train) / sigma_train
    (constant pixels are only centred). Inputs are (N, 64), or (N, 1, 8, 8) with ``image``.
    """
    from sklearn.datasets import load_digits as sklearn_digits  # bundled: no download

    _check_fractions("load_digits", val_fraction, test_fraction)
    x, y = sklearn_digits(return_X_y=True)  # x: (1797, 64) float64 in [0, 16]; y: (1797,)
    rng = np.random.default_rng(seed)
    indices = _stratified_split(y, val_fraction=val_fraction, test_fraction=test_fraction, rng=rng)
    mean, std = _standardise(x, indices[0], axis=(0,))  # (1, 64) each
    shape = (1, 8, 8) if image else (64,)
    return _as_splits((x - mean) / std, y, indices, num_classes=10, shape=shape)


def make_spiral(
    *,
    n_per_class: int = 100,
    num_classes: int = 3,
    noise: float = 0.2,
    seed: int = 0,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
) -> Splits:
    """The cs231n spiral: ``num_classes`` arms of ``n_per_class`` 2-D points each.

    For class j: r = linspace(0, 1, N), t = linspace(4j, 4(j+1), N) + noise * randn(N),
    x = (r sin t, r cos t). Drawn from ``numpy.random.default_rng(seed)``, then split
    stratified. Not standardised: the points already lie centred in the unit disc.
    """
    _check_fractions("make_spiral", val_fraction, test_fraction)
    if n_per_class < 1 or num_classes < 2:
        raise ConfigError(
            f"make_spiral: n_per_class={n_per_class}, num_classes={num_classes} is too small;"
            " use n_per_class >= 1 and num_classes >= 2"
        )
    check_fits(  # x, its standardised and float32 copies: about 5 float64 (N K, 2) arrays
        f"make_spiral(n_per_class={n_per_class}, num_classes={num_classes})",
        5 * 16 * n_per_class * num_classes,
        fix="lower task.options.n_per_class",
        error=DataError,
    )
    rng = np.random.default_rng(seed)
    x = np.zeros((n_per_class * num_classes, 2))  # (N K, 2)
    y = np.repeat(np.arange(num_classes), n_per_class)  # (N K,)
    r = np.linspace(0.0, 1.0, n_per_class)
    for j in range(num_classes):
        t = (
            np.linspace(j * 4.0, (j + 1) * 4.0, n_per_class)
            + rng.standard_normal(n_per_class) * noise
        )
        x[j * n_per_class : (j + 1) * n_per_class] = np.c_[r * np.sin(t), r * np.cos(t)]
    indices = _stratified_split(y, val_fraction=val_fraction, test_fraction=test_fraction, rng=rng)
    return _as_splits(x, y, indices, num_classes=num_classes, shape=(2,))


# --- CIFAR-10, python version ------------------------------------------------------------

_CIFAR_FILES = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch")
_CIFAR_EXPECTED = (
    "a cifar-10-batches-py folder holding data_batch_1..5 and test_batch, the python version"
    " of CIFAR-10 (cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html)"
)


def _read_batch(file: Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch file -> data (n, 3072) uint8 and labels (n,) int64, read without trust."""
    try:
        with open(file, "rb") as fh:
            batch = CifarUnpickler(fh, encoding="bytes").load()
    except Refused as exc:
        raise DataError(
            f"{file}: holds a pickle that refers to {exc.args[0]}; babysit refuses to load it"
            f" (it could run code); expected {_CIFAR_EXPECTED}"
        ) from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise DataError(
            f"{file}: cannot be read as a CIFAR-10 batch ({exc}); expected {_CIFAR_EXPECTED}"
        ) from None
    data = batch.get(b"data") if isinstance(batch, dict) else None
    labels = batch.get(b"labels") if isinstance(batch, dict) else None
    if (
        not isinstance(data, np.ndarray)
        or data.dtype != np.uint8
        or data.ndim != 2
        or data.shape[1] != 3072
        or labels is None
        or len(labels) != data.shape[0]
    ):
        raise DataError(
            f"{file}: is not a CIFAR-10 batch (want a dict with b'data' uint8 (n, 3072) and"
            f" n b'labels'); expected {_CIFAR_EXPECTED}"
        )
    return data, np.asarray(labels, dtype=np.int64)


def _channel_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact per-channel mean and std of uint8 images (n, 3, 32, 32) from 256-bin counts."""
    values = np.arange(256, dtype=np.float64)
    mean, std = np.empty(3), np.empty(3)
    for c in range(3):  # a histogram per channel: no float copy of the whole train set
        counts = np.bincount(x[:, c].ravel(), minlength=256).astype(np.float64)
        mean[c] = counts @ values / counts.sum()
        std[c] = np.sqrt(counts @ (values - mean[c]) ** 2 / counts.sum())
    return mean, np.where(std < _STD_FLOOR, 1.0, std)


def _to_tensor(x: np.ndarray, mean: np.ndarray, std: np.ndarray, image: bool) -> Tensor:
    """uint8 (n, 3, 32, 32) -> standardised float32, (n, 3, 32, 32) or (n, 3072)."""
    out = torch.from_numpy(x).to(torch.float32)  # one float copy; the rest is in place
    out.sub_(torch.from_numpy(mean).float().view(1, 3, 1, 1))
    out.div_(torch.from_numpy(std).float().view(1, 3, 1, 1))
    return out if image else out.reshape(len(out), -1)


def load_cifar10(
    path: str | os.PathLike[str],
    *,
    seed: int = 0,
    val_size: int = 5000,
    image: bool = True,
    limit: int | None = None,
) -> Splits:
    """CIFAR-10 from a local ``cifar-10-batches-py`` folder, read with a restricted unpickler.

    Train = data_batch_1..5 (the first ``limit`` examples when given, for tests); a permutation
    seeded by ``seed`` puts the last ``val_size`` of them in val; test = test_batch. Each channel
    is standardised with the TRAIN fold's mean and std. Inputs are (N, 3, 32, 32) float32, or
    (N, 3072) without ``image``. A pickle referring to anything but numpy arrays is refused.
    """
    folder = Path(path)
    if (folder / "cifar-10-batches-py").is_dir():  # the folder the archive unpacks into
        folder = folder / "cifar-10-batches-py"
    missing = [name for name in _CIFAR_FILES if not (folder / name).is_file()]
    if missing:
        raise DataError(f"{folder}: missing {', '.join(missing)}; expected {_CIFAR_EXPECTED}")
    if limit is not None and limit < 1:
        raise ConfigError(f"load_cifar10: limit={limit} must be a positive number of examples")
    chunks: list[tuple[np.ndarray, np.ndarray]] = []
    for name in _CIFAR_FILES[:-1]:  # stop reading once `limit` examples are in
        if limit is not None and sum(len(c[1]) for c in chunks) >= limit:
            break
        chunks.append(_read_batch(folder / name))
    x = np.concatenate([c[0] for c in chunks])[:limit].reshape(-1, 3, 32, 32)  # channel-major
    y = np.concatenate([c[1] for c in chunks])[:limit]
    if not 0 <= val_size < len(y):
        raise ConfigError(
            f"load_cifar10: val_size={val_size} must be in [0, {len(y)}) (the number of training"
            " examples read); lower val_size or raise limit"
        )
    order = np.random.default_rng(seed).permutation(len(y))
    train_idx, val_idx = order[: len(y) - val_size], order[len(y) - val_size :]
    x_test, y_test = _read_batch(folder / "test_batch")
    x_test = x_test.reshape(-1, 3, 32, 32)
    mean, std = _channel_stats(x[train_idx])  # (3,) each, train fold only
    shape = (3, 32, 32) if image else (3072,)
    parts = [(x[train_idx], y[train_idx]), (x[val_idx], y[val_idx]), (x_test, y_test)]
    train, val, test = (
        (_to_tensor(xs, mean, std, image), torch.from_numpy(ys)) for xs, ys in parts
    )
    return Splits(train, val, test, num_classes=10, input_shape=shape)
