"""Checkpoints: names, atomic writes, pruning, safe loading, RNG round trip."""

from __future__ import annotations

import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from babysit.errors import CheckpointError
from babysit.training.checkpoint import (
    capture_rng,
    checkpoint_name,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    restore_rng,
    save_checkpoint,
)


def test_name_carries_epoch_and_val_metric() -> None:
    assert checkpoint_name(7, "val_acc", 0.94123) == "epoch=007-val_acc=0.9412.pt"


def test_save_is_atomic_and_loads_weights_only(tmp_path: Path) -> None:
    path = tmp_path / "epoch=001-val_acc=0.5000.pt"
    save_checkpoint(path, {"model": {"w": torch.ones(2)}, "epoch": 1})
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp file left behind
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(2))


def test_pickled_code_is_refused(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self) -> tuple:
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"model": Evil(), "epoch": 1}, path, pickle_module=pickle)
    with pytest.raises(CheckpointError, match="cannot load"):
        load_checkpoint(path)


def test_prune_keeps_best_and_last(tmp_path: Path) -> None:
    for epoch, acc in [(1, 0.5), (2, 0.9), (3, 0.7), (4, 0.6), (5, 0.8)]:
        (tmp_path / checkpoint_name(epoch, "val_acc", acc)).write_bytes(b"x")
    prune_checkpoints(tmp_path, keep_best=2, keep_last=1, direction="max")
    assert [c.epoch for c in list_checkpoints(tmp_path)] == [2, 5]
    prune_checkpoints(tmp_path, keep_best=0, keep_last=1, direction="min")
    assert [c.epoch for c in list_checkpoints(tmp_path)] == [5]


def test_rng_states_round_trip_through_a_safe_load(tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(3)
    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    save_checkpoint(tmp_path / "s.pt", {"model": {}, "epoch": 0, "rng": capture_rng(gen)})
    expected = (torch.rand(3), np.random.rand(3), random.random(), torch.rand(2, generator=gen))
    restore_rng(load_checkpoint(tmp_path / "s.pt")["rng"], gen)
    got = (torch.rand(3), np.random.rand(3), random.random(), torch.rand(2, generator=gen))
    assert torch.equal(expected[0], got[0]) and np.array_equal(expected[1], got[1])
    assert expected[2] == got[2] and torch.equal(expected[3], got[3])
