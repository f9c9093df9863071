"""Atomic writes: readers never see half a file, modes follow the umask, NaN/inf round-trip."""

from __future__ import annotations

import errno
import json
import math
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from babysit._io import (
    atomic_open,
    is_disk_full,
    json_restore,
    json_safe,
    loads_json,
    read_json_file,
    sweep_stale_temps,
    write_json_atomic,
    write_text_atomic,
)


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


# issue 13, defect 5: untrusted JSON; (text, parses?) around the depth cap of 64
DEPTHS = [
    ("[" * 64 + "]" * 64, True),
    ("[" * 65 + "]" * 65, False),
    ('{"a": ' * 64 + "1" + "}" * 64, True),
    ('{"a": ' * 65 + "1" + "}" * 65, False),
    ("[" * 200_000 + "]" * 200_000, False),
    ('["' + "[" * 500 + '"]', True),  # brackets inside a string are text
    ('["\\"' + "[" * 500 + '"]', True),  # ... also after an escaped quote
]


@pytest.mark.parametrize(("text", "ok"), DEPTHS, ids=range(len(DEPTHS)))
def test_json_nested_deeper_than_64_levels_is_refused(text: str, ok: bool) -> None:
    if ok:
        assert loads_json(text) == json.loads(text)
    else:
        with pytest.raises(ValueError, match="nested deeper than 64 levels"):
            loads_json(text)


def test_a_json_file_larger_than_the_cap_is_refused_unread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("babysit._io.MAX_JSON_BYTES", 100)
    (tmp_path / "big.json").write_text("[" + "1," * 100 + "1]")
    with pytest.raises(ValueError, match="larger than"):
        read_json_file(tmp_path / "big.json")


def test_a_failed_atomic_write_names_its_file_in_the_oserror(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError) as info:
        write_text_atomic(tmp_path / "f.txt", "x")
    assert info.value.filename == str(tmp_path / "f.txt") and is_disk_full(info.value)
    assert list(tmp_path.iterdir()) == []


def test_temp_files_carry_their_writers_pid_and_only_dead_writers_are_swept(
    tmp_path: Path,
) -> None:
    with atomic_open(tmp_path / "f.txt") as f:
        (mine,) = [p.name for p in tmp_path.iterdir()]
        assert mine.startswith(f".f.txt.{os.getpid()}-") and mine.endswith(".tmp")
        assert sweep_stale_temps(tmp_path) == []  # this process is alive and writing
        f.write("x")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    stale = tmp_path / f".g.json.{dead}-abc_123.tmp"
    stale.write_text("half")
    other = tmp_path / ".h.tmp"  # not ours: left alone
    other.write_text("?")
    assert sweep_stale_temps(tmp_path) == [stale]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".h.tmp", "f.txt"]
