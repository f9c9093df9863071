"""Bundled data sets and CIFAR-10 reading, against sklearn's raw digits and the spiral formula."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits as sklearn_digits

from babysit.data import Splits, load_cifar10, load_digits, make_spiral
from babysit.errors import ConfigError, DataError


def _all(s: Splits) -> list[torch.Tensor]:
    return [t for split in (s.train, s.val, s.test) for t in split]


def _row_set(*xs: torch.Tensor) -> set[bytes]:
    return {row.numpy().tobytes() for x in xs for row in x.reshape(len(x), -1)}


# --- digits ------------------------------------------------------------------------------


def test_digits_shapes_dtypes_and_sizes() -> None:
    s = load_digits()
    sizes = [len(s.train[0]), len(s.val[0]), len(s.test[0])]
    assert sum(sizes) == 1797  # sklearn's digits
    assert sizes[1] == pytest.approx(0.2 * 1797, abs=10)
    assert sizes[2] == pytest.approx(0.2 * 1797, abs=10)
    assert s.num_classes == 10 and s.input_shape == (64,)
    for x, y in (s.train, s.val, s.test):
        assert x.dtype == torch.float32 and x.shape[1:] == (64,)
        assert y.dtype == torch.int64 and y.shape == (len(x),)


def test_digits_image_is_the_flat_data_reshaped() -> None:
    flat, img = load_digits(seed=3), load_digits(seed=3, image=True)
    assert img.input_shape == (1, 8, 8) and img.train[0].shape[1:] == (1, 8, 8)
    for a, b in zip(_all(flat), _all(img), strict=True):
        assert torch.equal(a, b.reshape(a.shape))


def test_digits_same_seed_gives_identical_tensors() -> None:
    for a, b in zip(_all(load_digits(seed=7)), _all(load_digits(seed=7)), strict=True):
        assert torch.equal(a, b)


def test_digits_different_seed_gives_a_different_split() -> None:
    a, b = load_digits(seed=0), load_digits(seed=1)
    assert _row_set(a.val[0]) != _row_set(b.val[0])


def test_digits_splits_are_disjoint_and_cover_every_image() -> None:
    s = load_digits()
    # sklearn's 1797 images are all distinct, and standardising is one affine map per pixel,
    # so 1797 distinct rows over the three splits means no image is in two splits.
    assert len(np.unique(sklearn_digits(return_X_y=True)[0], axis=0)) == 1797
    assert len(_row_set(s.train[0], s.val[0], s.test[0])) == 1797


def test_digits_are_stratified_by_class() -> None:
    s = load_digits()
    total = np.bincount(sklearn_digits(return_X_y=True)[1], minlength=10)
    for _, y in (s.val, s.test):
        counts = torch.bincount(y, minlength=10).numpy()
        assert np.all(np.abs(counts - 0.2 * total) <= 1)


def test_digits_splits_are_shuffled_not_sorted_by_class() -> None:
    s = load_digits()
    for _, y in (s.train, s.val, s.test):
        assert len(torch.unique(y[:30])) >= 5  # a class-sorted split would start with one class


def test_digits_standardised_with_train_statistics_only() -> None:
    s = load_digits()
    raw = sklearn_digits(return_X_y=True)[0]
    x_train = s.train[0].double()
    assert x_train.mean(0).abs().max() < 1e-5
    std = x_train.std(0, unbiased=False)
    varying = std > 0
    assert torch.allclose(std[varying], torch.ones(int(varying.sum()), dtype=torch.float64))
    assert int((~varying).sum()) >= 1  # a pixel blank in all train images: centred, no NaN
    assert np.isclose(raw[:, 0].std(), 0.0)  # pixel 0 is blank everywhere in sklearn's data
    assert torch.all(s.val[0][:, 0] == 0) and torch.isfinite(s.val[0]).all()
    # val is transformed with train's statistics, so it is not exactly standardised itself
    assert s.val[0].double().mean(0).abs().max() > 0.05


def test_digits_pixels_constant_in_train_are_centred_not_scaled() -> None:
    s = load_digits(seed=0)  # seed 0: pixel 56 is 0 in every train image, 1 in some val/test
    constant = s.train[0].std(0) == 0
    held_out = torch.cat([s.val[0], s.test[0]])[:, constant]
    assert held_out.abs().max() > 0  # the case the std floor exists for
    # raw pixels are integers in [0, 16]: minus the train constant they stay such integers
    assert torch.equal(held_out, held_out.round()) and held_out.abs().max() <= 16


def test_digits_bad_fractions_raise_config_error() -> None:
    with pytest.raises(ConfigError, match="val_fraction"):
        load_digits(val_fraction=1.2)
    with pytest.raises(ConfigError, match="sum < 1"):
        load_digits(val_fraction=0.5, test_fraction=0.5)


# --- spiral ------------------------------------------------------------------------------


def test_spiral_shapes_and_class_balance() -> None:
    s = make_spiral(n_per_class=100, num_classes=3)
    assert s.input_shape == (2,) and s.num_classes == 3
    assert [len(s.train[0]), len(s.val[0]), len(s.test[0])] == [180, 60, 60]
    for (x, y), n in zip((s.train, s.val, s.test), (60, 20, 20), strict=True):
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert torch.bincount(y, minlength=3).tolist() == [n, n, n]


def test_spiral_without_noise_is_the_notes_formula() -> None:
    s = make_spiral(n_per_class=50, num_classes=4, noise=0.0)
    x = torch.cat([s.train[0], s.val[0], s.test[0]]).double()
    y = torch.cat([s.train[1], s.val[1], s.test[1]])
    r = np.linspace(0.0, 1.0, 50)
    for j in range(4):
        t = np.linspace(j * 4, (j + 1) * 4, 50)
        want = np.c_[r * np.sin(t), r * np.cos(t)]  # (50, 2)
        got = x[y == j].numpy()
        order = np.lexsort(got.T), np.lexsort(want.T)
        np.testing.assert_allclose(got[order[0]], want[order[1]], atol=1e-6)


def test_spiral_noise_moves_the_angle_not_the_radius() -> None:
    s = make_spiral(n_per_class=40, num_classes=3, noise=0.3, seed=5)
    x = torch.cat([s.train[0], s.val[0], s.test[0]]).double()
    y = torch.cat([s.train[1], s.val[1], s.test[1]])
    for j in range(3):
        radii = np.sort(x[y == j].norm(dim=1).numpy())
        np.testing.assert_allclose(radii, np.linspace(0, 1, 40), atol=1e-6)
    clean = make_spiral(n_per_class=40, num_classes=3, noise=0.0, seed=5)
    assert _row_set(*_all(clean)[::2]) != _row_set(*_all(s)[::2])


def test_spiral_seed_determines_everything() -> None:
    for a, b in zip(_all(make_spiral(seed=2)), _all(make_spiral(seed=2)), strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(make_spiral(seed=2).train[0], make_spiral(seed=3).train[0])
    s = make_spiral(seed=2)
    assert len(_row_set(s.train[0], s.val[0], s.test[0])) == 300  # disjoint


# --- CIFAR-10 ----------------------------------------------------------------------------

PER_BATCH, N_TEST = 20, 30


def _batch(
    ids: np.ndarray, rng: np.random.Generator
) -> tuple[dict[bytes, object], np.ndarray, np.ndarray]:
    """A batch dict in CIFAR's format; pixel 0 (red, top-left) holds a unique example id."""
    data = rng.integers(0, 256, size=(len(ids), 3072), dtype=np.uint8)  # (n, 3 * 32 * 32)
    data[:, 0] = ids
    labels = rng.integers(0, 10, size=len(ids))
    batch = {
        b"batch_label": b"fake batch",
        b"labels": [int(v) for v in labels],
        b"data": data,
        b"filenames": [f"img_{i}.png".encode() for i in ids],
    }
    return batch, data, labels


def _write_cifar(folder: Path, *, protocol: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Write a fake cifar-10-batches-py; return raw train data, train labels, raw test data."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(123)
    datas, labels = [], []
    for i in range(5):
        batch, data, y = _batch(np.arange(i * PER_BATCH, (i + 1) * PER_BATCH), rng)
        (folder / f"data_batch_{i + 1}").write_bytes(pickle.dumps(batch, protocol=protocol))
        datas.append(data)
        labels.append(y)
    test, test_data, _ = _batch(np.arange(N_TEST) + 100, rng)
    (folder / "test_batch").write_bytes(pickle.dumps(test, protocol=protocol))
    return np.concatenate(datas), np.concatenate(labels), test_data


@pytest.fixture
def cifar(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray, np.ndarray]:
    folder = tmp_path / "cifar-10-batches-py"
    return (folder, *_write_cifar(folder))


def _ids(x: torch.Tensor) -> np.ndarray:
    """Example ids from pixel 0: standardising is increasing, so ranks recover the ids."""
    return np.argsort(np.argsort(x.reshape(len(x), -1)[:, 0].numpy(), kind="stable"))


def test_cifar_reads_batches_and_standardises_with_train_channel_stats(cifar: tuple) -> None:
    folder, raw, labels, raw_test = cifar
    s = load_cifar10(folder, val_size=25)
    assert s.input_shape == (3, 32, 32) and s.num_classes == 10
    assert [len(s.train[0]), len(s.val[0]), len(s.test[0])] == [75, 25, N_TEST]
    both = torch.cat([s.train[0], s.val[0]])
    ids = _ids(both)  # (100,) which raw example each row of train + val is
    assert sorted(ids) == list(range(100))
    train_ids = ids[:75]
    # oracle: float64 numpy statistics of the raw train fold, per channel
    images = raw.reshape(-1, 3, 32, 32).astype(np.float64)
    mean = images[train_ids].mean(axis=(0, 2, 3), keepdims=True)
    std = images[train_ids].std(axis=(0, 2, 3), keepdims=True)
    np.testing.assert_allclose(both.numpy(), (images[ids] - mean) / std, atol=1e-5)
    assert torch.equal(torch.cat([s.train[1], s.val[1]]), torch.from_numpy(labels[ids]))
    want_test = (raw_test.reshape(-1, 3, 32, 32) - mean) / std  # test in file order
    np.testing.assert_allclose(s.test[0].numpy(), want_test, atol=1e-5)
    assert s.train[0].dtype == torch.float32 and s.train[1].dtype == torch.int64


def test_cifar_split_depends_on_seed_only(cifar: tuple) -> None:
    folder = cifar[0]
    a, b = load_cifar10(folder, val_size=25, seed=1), load_cifar10(folder, val_size=25, seed=1)
    for u, v in zip(_all(a), _all(b), strict=True):
        assert torch.equal(u, v)
    c = load_cifar10(folder, val_size=25, seed=2)
    val_a = set(_ids(torch.cat([a.train[0], a.val[0]]))[75:])
    val_c = set(_ids(torch.cat([c.train[0], c.val[0]]))[75:])
    assert len(val_a) == len(val_c) == 25 and val_a != val_c


def test_cifar_flat_and_limit(cifar: tuple) -> None:
    folder, _, labels, _ = cifar
    s = load_cifar10(folder, val_size=10, image=False, limit=30)
    assert s.input_shape == (3072,) and s.train[0].shape == (20, 3072)
    ids = _ids(torch.cat([s.train[0], s.val[0]]))
    assert sorted(ids) == list(range(30))  # the first 30 examples: batch 1 and half of batch 2
    assert len(s.test[0]) == N_TEST
    assert torch.equal(torch.cat([s.train[1], s.val[1]]), torch.from_numpy(labels[ids]))


def test_cifar_accepts_the_parent_folder(cifar: tuple) -> None:
    s = load_cifar10(cifar[0].parent, val_size=25)
    assert len(s.train[0]) == 75


def test_cifar_reads_numpy1_pickles_and_protocol_4(tmp_path: Path) -> None:
    folder = tmp_path / "p4"
    raw = _write_cifar(folder, protocol=4)[0]
    assert len(load_cifar10(folder, val_size=0).train[0]) == len(raw)
    old = tmp_path / "numpy1"
    _write_cifar(old, protocol=2)
    for file in old.iterdir():  # the module names numpy 1 (and the real files) use
        blob = file.read_bytes().replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
        assert b"numpy.core.multiarray\n_reconstruct" in blob
        file.write_bytes(blob)
    assert len(load_cifar10(old, val_size=0).train[0]) == len(raw)


class _Payload:
    def __init__(self, func: object, arg: str) -> None:
        self.func, self.arg = func, arg

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return self.func, (self.arg,)


@pytest.mark.parametrize(
    "func, name, protocol",
    [(os.system, "posix.system", 2), (os.system, "posix.system", 5), (eval, "builtins.eval", 5)],
)
def test_cifar_malicious_pickle_is_refused_without_running(
    cifar: tuple, tmp_path: Path, func: object, name: str, protocol: int
) -> None:
    folder = cifar[0]
    marker = tmp_path / "pwned"
    command = f"echo pwned > {marker}"
    code = command if func is os.system else f"open({str(marker)!r}, 'w').write('pwned')"
    batch = {b"data": _Payload(func, code), b"labels": []}
    (folder / "data_batch_1").write_bytes(pickle.dumps(batch, protocol=protocol))
    with pytest.raises(DataError, match="refuses") as err:
        load_cifar10(folder)
    assert name in str(err.value) and "python version" in str(err.value)
    assert "data_batch_1" in str(err.value)
    assert not marker.exists()


def test_cifar_missing_folder_or_file_raises_data_error(tmp_path: Path, cifar: tuple) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match="data_batch_1") as err:
        load_cifar10(missing)
    assert str(missing) in str(err.value)
    (cifar[0] / "test_batch").unlink()
    with pytest.raises(DataError, match="missing test_batch"):
        load_cifar10(cifar[0])


def test_cifar_corrupt_or_wrong_content_raises_data_error(cifar: tuple) -> None:
    folder = cifar[0]
    blob = (folder / "data_batch_2").read_bytes()
    (folder / "data_batch_2").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError, match="data_batch_2"):
        load_cifar10(folder)
    (folder / "data_batch_2").write_bytes(pickle.dumps({b"data": [1, 2]}, protocol=2))
    with pytest.raises(DataError, match="not a CIFAR-10 batch"):
        load_cifar10(folder)


def test_cifar_val_size_too_large_raises_config_error(cifar: tuple) -> None:
    with pytest.raises(ConfigError, match="val_size"):
        load_cifar10(cifar[0], val_size=100)
