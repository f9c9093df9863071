"""The one reader of a split: tensors, Datasets and DataLoaders give the same examples."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

from babysit.errors import DataError
from babysit.splits import (
    Batches,
    check_task,
    draw,
    first,
    image_shape,
    seeded,
    split_size,
    train_view,
)
from babysit.tasks import Task, get_task


def _data(n: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 3, generator=g), torch.randint(0, 2, (n,), generator=g)


def _forms(x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
    """The same data as each kind of split (the loader shuffles: the readers index it)."""
    return {
        "tensors": (x, y),
        "dataset": TensorDataset(x, y),
        "loader": DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True),
    }


class _Stream(IterableDataset[tuple[torch.Tensor, torch.Tensor]]):
    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __iter__(self) -> Any:
        return iter(zip(self.x, self.y, strict=True))


class _Counting(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Counts the reads of its items, so a re-read through __getitem__ shows."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y, self.reads = x, y, 0

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        self.reads += 1
        return self.x[i], self.y[i]


@pytest.mark.parametrize("kind", ["tensors", "dataset", "loader"])
def test_every_split_kind_yields_every_example_once(kind: str) -> None:
    x, y = _data()
    split = {**_forms(x, y), "loader": DataLoader(TensorDataset(x, y), batch_size=16)}[kind]
    batches = Batches(split, 16, shuffle=True, generator=torch.Generator().manual_seed(1))
    seen = torch.cat([xb for xb, _ in batches])
    assert len(batches) == 4 and seen.shape == x.shape and split_size(split) == 50
    assert torch.equal(seen[seen[:, 0].argsort()], x[x[:, 0].argsort()])


def test_tensor_batches_are_a_generator_permutation_in_order() -> None:
    # the trainer's data order (checkpointed through the generator): one randperm an epoch
    x, y = _data()
    gen = torch.Generator().manual_seed(3)
    batches = Batches((x, y), 8, shuffle=True, generator=gen)
    oracle = torch.Generator().manual_seed(3)
    for _ in range(2):  # two epochs: the generator moves on
        order = torch.randperm(50, generator=oracle)
        got = [yb for _, yb in batches]
        want = [y[order[i : i + 8]] for i in range(0, 50, 8)]
        assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
    plain = [yb for _, yb in Batches((x, y), 8, shuffle=False)]
    assert torch.equal(torch.cat(plain), y)


@pytest.mark.parametrize("kind", ["dataset", "loader"])
def test_first_gives_the_same_examples_in_every_form(kind: str) -> None:
    x, y = _data()
    xs, ys = first(_forms(x, y)[kind], 7).read()
    assert torch.equal(xs, x[:7]) and torch.equal(ys, y[:7])
    tx, ty = first((x, y), 7).read()
    assert torch.equal(tx, x[:7]) and torch.equal(ty, y[:7])
    assert first((x, y), 500).size == 50  # fewer examples than asked: all of them


@pytest.mark.parametrize("kind", ["tensors", "dataset", "loader"])
def test_draw_is_a_prefix_of_one_seeded_permutation(kind: str) -> None:
    x, y = _data()
    split = _forms(x, y)[kind]
    rows = torch.randperm(50, generator=torch.Generator().manual_seed(5))[:12]
    xs, ys = draw(split, 12, seed=5).read()
    assert torch.equal(xs, x[rows]) and torch.equal(ys, y[rows])
    small, _ = draw(split, 4, seed=5).read()
    assert torch.equal(small, xs[:4])  # a smaller draw is a subset of a larger one
    other, _ = draw(split, 12, seed=6).read()
    assert not torch.equal(other, xs)


def test_a_dataset_is_read_again_on_every_read_tensors_are_not() -> None:
    x, y = _data()
    data = _Counting(x, y)
    rows = draw(data, 5, seed=0)
    rows.read()
    rows.read()
    assert rows.rereads and data.reads == 10
    assert not draw((x, y), 5, seed=0).rereads


def test_an_iterable_dataset_gives_its_first_examples_once() -> None:
    x, y = _data()
    rows = draw(DataLoader(_Stream(x, y), batch_size=4), 10, seed=0)
    xs, ys = rows.read()
    assert torch.equal(xs, x[:10]) and torch.equal(ys, y[:10]) and not rows.rereads
    with pytest.raises(DataError, match="without a length"):
        split_size(_Stream(x, y), "train")


def _bad_splits() -> dict[str, Any]:
    x, y = _data()
    return {
        "a string": "oops",
        "a dict": {"x": 1},
        "a list of ints": [1, 2, 3],
        "None": None,
        "a single tensor": x,
        "three tensors": (x, y, y),
        "targets as a list": (x, y.tolist()),
        "mismatched lengths": (x, y[:40]),
        "scalar targets": (x[0, 0], y[0]),
    }


@pytest.mark.parametrize("case", list(_bad_splits()))
def test_a_split_of_the_wrong_type_is_a_one_line_data_error(case: str) -> None:
    split = _bad_splits()[case]
    for read in (
        lambda: split_size(split, "val"),
        lambda: first(split, 4, name="val"),
        lambda: draw(split, 4, seed=0, name="val"),
        lambda: Batches(split, 4, shuffle=False, name="val"),
    ):
        with pytest.raises(DataError) as err:
            read()
        message = str(err.value)
        assert "\n" not in message and "split 'val'" in message and "fix:" in message


def test_items_that_are_not_pairs_are_a_data_error() -> None:
    class Dicts(Dataset[dict[str, int]]):
        def __len__(self) -> int:
            return 3

        def __getitem__(self, i: int) -> dict[str, int]:
            return {"x": i}

    with pytest.raises(DataError, match="split 'train' yields a dict"):
        first(Dicts(), 2, name="train").read()
    with pytest.raises(DataError, match="yields"):
        next(iter(Batches(Dicts(), 2, shuffle=False, name="train")))


def test_an_empty_split_is_a_data_error() -> None:
    x, y = _data()
    for split in ((x[:0], y[:0]), TensorDataset(x[:0], y[:0])):
        with pytest.raises(DataError, match="empty"):
            first(split, 3, name="train", where="gradcheck")


def test_check_task_names_the_split_and_who_reads_it() -> None:
    x, y = _data()

    def model(cfg: dict[str, Any]) -> torch.nn.Module:
        return torch.nn.Linear(3, 2)

    task = Task(model, (x, y), "oops", torch.nn.functional.cross_entropy)
    with pytest.raises(DataError, match=r"^task 'mine': split 'val' is a str"):
        check_task(task, where="task 'mine'")
    check_task(Task(model, (x, y), (x, y), torch.nn.functional.cross_entropy, test=None))
    assert train_view(task)[1] == "train"
    view = Task(model, (x, y), (x, y), torch.nn.functional.cross_entropy, train_eval=(x, y))
    assert train_view(view)[1] == "train_eval"


def test_seeded_reads_repeat_and_leave_every_stream_as_it_was() -> None:
    torch_state, np_state, py_state = (
        torch.get_rng_state(),
        np.random.get_state(),
        random.getstate(),
    )
    with seeded(4):
        a = (torch.rand(2), np.random.rand(), random.random())
    with seeded(4):
        b = (torch.rand(2), np.random.rand(), random.random())
    assert torch.equal(a[0], b[0]) and a[1:] == b[1:]
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], np_state[1]) and random.getstate() == py_state


def test_image_shape_of_flat_images_only() -> None:
    assert image_shape(get_task("digits-mlp")) == (8, 8)  # flat 64 features drawn as 8x8
    assert image_shape(get_task("spiral-mlp")) is None
    assert image_shape(get_task("digits-convnet")) is None  # already images
