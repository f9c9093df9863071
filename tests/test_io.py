"""Atomic writes: readers never see half a file, modes follow the umask, NaN/inf round-trip."""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path

import pytest

from babysit._io import json_restore, json_safe, write_json_atomic, write_text_atomic


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_atomic_write_gets_the_mode_a_plain_open_gives(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        plain = tmp_path / "plain.txt"
        with open(plain, "w") as f:  # the oracle: what the user's umask gives any new file
            f.write("x")
        atomic = write_text_atomic(tmp_path / "atomic.txt", "x")
    finally:
        os.umask(old)
    assert _mode(atomic) == _mode(plain) == 0o666 & ~umask


def test_failed_atomic_write_leaves_no_file_and_no_temp(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        write_json_atomic(tmp_path / "bad.json", {"x": object()})
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_replaces_the_old_file_whole(tmp_path: Path) -> None:
    path = tmp_path / "f.txt"
    write_text_atomic(path, "old")
    write_text_atomic(path, "new")
    assert path.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_nan_and_inf_are_strings_in_json_and_come_back_as_floats(tmp_path: Path) -> None:
    data = {"a": math.nan, "b": [math.inf, -math.inf, 1.5], "c": (2, "nan-not-a-number")}
    path = write_json_atomic(tmp_path / "x.json", data)
    raw = json.loads(path.read_text())  # strict JSON: no NaN tokens
    assert raw == {"a": "nan", "b": ["inf", "-inf", 1.5], "c": [2, "nan-not-a-number"]}
    back = json_restore(raw)
    assert math.isnan(back["a"]) and back["b"][:2] == [math.inf, -math.inf]
    assert json_safe(back)["a"] == "nan"


def test_json_writes_tensor_scalars_as_numbers(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    path = write_json_atomic(
        tmp_path / "t.json", {"x": torch.tensor(0.5), "y": torch.tensor(math.nan)}
    )
    assert json.loads(path.read_text()) == {"x": 0.5, "y": "nan"}
