"""Damaged, foreign and starved run dirs: one line naming the file and the problem, exit 2.

Issue 13, defects 7 (resume of a damaged or foreign run dir), 10 (a full disk) and 12 (a
NaN validation metric). Each table row reproduced its defect before the fix: a traceback,
a silent resume of a foreign checkpoint, or a run that "succeeded" with ``val_loss=nan``.
"""

from __future__ import annotations

import copy
import errno
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

import babysit
from babysit.cli import app
from babysit.config import Config
from babysit.monitor.log import read_metrics
from babysit.training.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
from babysit.training.run import train

runner = CliRunner()


def _cli(*args: str) -> tuple[int, list[str]]:
    result = runner.invoke(app, list(args))
    return result.exit_code, [ln for ln in result.output.splitlines() if ln.strip()]


def _snapshot(run_dir: Path) -> dict[str, bytes | None]:
    """Every path under the run dir with its bytes (None: a dir or an unreadable file)."""
    out: dict[str, bytes | None] = {}
    for p in sorted(run_dir.rglob("*")):
        try:
            out[str(p.relative_to(run_dir))] = p.read_bytes() if p.is_file() else None
        except OSError:
            out[str(p.relative_to(run_dir))] = None
    return out


@pytest.fixture(scope="module")
def good_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 2-epoch digits run (Adam), copied by each case before it is damaged."""
    cfg = {
        "task": {"name": "digits-mlp"},
        "model": {"hidden": [16]},
        "optim": {"rule": "adam", "lr": 3e-3},
        "train": {"epochs": 2, "batch_size": 64, "seed": 0, "report": False},
    }
    return train(cfg, out=tmp_path_factory.mktemp("good") / "run", quiet=True).dir


def _latest(run: Path) -> Path:
    return list_checkpoints(run / "checkpoints")[-1].path


def _edit_checkpoint(edit: Callable[[dict[str, Any]], None]) -> Callable[[Path], str]:
    def damage(run: Path) -> str:
        state = load_checkpoint(_latest(run))
        edit(state)
        save_checkpoint(_latest(run), state)
        return _latest(run).name

    return damage


def _edit_config(old: str, new: str) -> Callable[[Path], str]:
    def damage(run: Path) -> str:
        path = run / "config.toml"
        path.write_text(path.read_text().replace(old, new))
        return _latest(run).name

    return damage


def _metrics_line(line: bytes) -> Callable[[Path], str]:
    def damage(run: Path) -> str:
        path = run / "metrics.jsonl"
        lines = path.read_bytes().splitlines(keepends=True)
        path.write_bytes(b"".join([*lines[:3], line, *lines[3:]]))
        return "metrics.jsonl: line 4"

    return damage


def _replace_by_dir(name: str) -> Callable[[Path], str]:
    def damage(run: Path) -> str:
        target = _latest(run) if name == "checkpoint" else run / name
        target.unlink()
        target.mkdir()
        return target.name

    return damage


def _wrong_shapes(state: dict[str, Any]) -> None:
    state["model"] = {k: torch.zeros(3, 3) for k in state["model"]}


def _no_param_groups(state: dict[str, Any]) -> None:
    state["optimizer"]["param_groups"] = []


# (what is damaged, how; the fragment the one line must hold besides the file's name)
DAMAGED = [
    ("checkpoint of another model config", _edit_config("16", "8"), "model.hidden"),
    ("checkpoint with the wrong shapes", _edit_checkpoint(_wrong_shapes), "size mismatch"),
    ("checkpoint without its optimizer state",
     _edit_checkpoint(lambda s: s.pop("optimizer")), "'optimizer'"),
    ("checkpoint whose optimizer has no param groups",
     _edit_checkpoint(_no_param_groups), "does not fit"),
    ("an Adam checkpoint in an SGD run", _edit_config('rule = "adam"', 'rule = "sgd"'),
     "optim.rule = 'adam' there, 'sgd' here"),
    ("an Adam checkpoint in a momentum run",
     _edit_config('rule = "adam"', 'rule = "momentum"'), "optim.rule"),
    ("checkpoint of another task", _edit_config('"digits-mlp"', '"spiral-mlp"'),
     "task.name"),
    ("metrics.jsonl deleted", lambda run: (run / "metrics.jsonl").unlink() or "metrics.jsonl",
     "missing"),
    ("metrics.jsonl is a directory", _replace_by_dir("metrics.jsonl"), "not a file"),
    ("an invalid UTF-8 byte in metrics.jsonl", _metrics_line(b'{"kind": "ev\xffent"}\n'),
     "not valid UTF-8"),
    ("a non-object JSON line", _metrics_line(b"[1, 2, 3]\n"), "a JSON array, not an object"),
    ("a JSON null line", _metrics_line(b"null\n"), "a JSON null"),
    ("200,000-deep JSON", _metrics_line(b"[" * 200_000 + b"]" * 200_000 + b"\n"),
     "nested deeper than 64"),
    ("a 9 MB line", _metrics_line(b'{"kind": "event", "x": "' + b"a" * 9 * 2**20 + b'"}\n'),
     "longer than 8 MiB"),
    ("a checkpoint that is a directory", _replace_by_dir("checkpoint"), "not found"),
]  # fmt: skip


@pytest.mark.parametrize(("label", "damage", "fragment"), DAMAGED, ids=[d[0] for d in DAMAGED])
def test_resume_of_a_damaged_or_foreign_run_dir_exits_2_naming_the_file(
    tmp_path: Path, good_run: Path, label: str, damage: Callable[[Path], str], fragment: str
) -> None:
    run = Path(shutil.copytree(good_run, tmp_path / "run"))
    named = damage(run)
    before = _snapshot(run)
    code, lines = _cli("train", "--resume", "--out", str(run), "--set", "train.epochs=3", "-q")
    assert code == 2, (label, lines)
    assert len(lines) == 1 and lines[0].startswith("babysit: error:"), (label, lines)
    assert named in lines[0] and fragment in lines[0], (label, lines[0])
    assert _snapshot(run) == before, label  # nothing written, nothing removed


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads and writes whatever the modes say")
@pytest.mark.parametrize("what", ["checkpoint", "metrics.jsonl", "config.toml", "run dir"])
def test_resume_with_an_unreadable_file_or_a_read_only_dir_exits_2(
    tmp_path: Path, good_run: Path, what: str
) -> None:
    run = Path(shutil.copytree(good_run, tmp_path / "run"))
    target = {"checkpoint": _latest(run), "run dir": run}.get(what, run / what)
    target.chmod(0o555 if what == "run dir" else 0)
    try:
        code, lines = _cli("train", "--resume", "--out", str(run), "--set", "train.epochs=3")
    finally:
        target.chmod(0o755 if what == "run dir" else 0o644)
    assert code == 2 and len(lines) == 1 and lines[0].startswith("babysit: error:"), lines


def _failing_fsync(monkeypatch: pytest.MonkeyPatch, needle: str, code: int) -> list[str]:
    """os.fsync raises OSError(code) for files whose name holds ``needle`` (a full disk)."""
    real, failed = os.fsync, []

    def fsync(fd: int) -> None:
        name = os.readlink(f"/proc/self/fd/{fd}")
        if needle in name:
            failed.append(name)
            raise OSError(code, os.strerror(code))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return failed


class _FullFile:
    """A text file whose writes fail with ENOSPC (what a full disk does to an append)."""

    def __init__(self, f: Any, failed: list[str]) -> None:
        self.f, self.failed = f, failed

    def write(self, text: str) -> int:
        self.failed.append(self.f.name)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.f, name)


def _failing_metrics(monkeypatch: pytest.MonkeyPatch, needle: str, code: int) -> list[str]:
    """metrics.jsonl's appends fail: the writer's open() hands out a full file."""
    failed: list[str] = []

    def full_open(*args: Any, **kwargs: Any) -> _FullFile:
        return _FullFile(open(*args, **kwargs), failed)

    monkeypatch.setattr("babysit.monitor.log.open", full_open, raising=False)
    return failed


# defect 10: (how the disk fills, the file whose write fails, errno, last good epoch)
DISK_FULL = [
    (_failing_fsync, "epoch=002", errno.ENOSPC, 1),
    (_failing_fsync, "epoch=002", errno.EDQUOT, 1),
    (_failing_fsync, "epoch=001", errno.ENOSPC, None),
    (_failing_fsync, "findings.json", errno.ENOSPC, 2),
    (_failing_metrics, "metrics.jsonl", errno.ENOSPC, None),
]


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to name an fd")
@pytest.mark.parametrize(("inject", "needle", "code", "last"), DISK_FULL)
def test_a_full_disk_is_one_line_naming_the_device_file_and_last_good_checkpoint(
    tmp_path: Path,
    tiny_config: dict,
    monkeypatch: pytest.MonkeyPatch,
    inject: Callable[[pytest.MonkeyPatch, str, int], list[str]],
    needle: str,
    code: int,
    last: int | None,
) -> None:
    cfg = copy.deepcopy(tiny_config)
    cfg["train"]["epochs"] = 2
    config = tmp_path / "c.toml"
    config.write_text(Config.from_dict(cfg).to_toml())
    out = tmp_path / "run"
    failed = inject(monkeypatch, needle, code)
    exit_code, lines = _cli("train", str(config), "--out", str(out), "--quiet")
    monkeypatch.undo()
    assert failed, "the fault was never injected"
    assert exit_code == 2, lines
    line = lines[-1]
    assert line.startswith("babysit: error: no space left on device /") and needle in line
    good = list_checkpoints(out / "checkpoints")
    assert [c.epoch for c in good][-1:] == ([last] if last else [])
    assert (f"the last good checkpoint is {good[-1].path}" if last else "no checkpoint") in line
    assert not list(out.rglob("*.tmp"))  # the failed write left no partial file
    reference = train(cfg, out=tmp_path / "reference", quiet=True)
    code_resumed, lines = _cli("train", "--resume", "--out", str(out), "--quiet")
    assert code_resumed == 0, lines
    a = load_checkpoint(list_checkpoints(reference.dir / "checkpoints")[-1].path)["model"]
    b = load_checkpoint(list_checkpoints(out / "checkpoints")[-1].path)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)  # freed space: resumed bit-identically


def _nan_val_task(kind: str) -> babysit.Task:
    base = babysit.get_task("digits-mlp")
    xv, yv = base.val
    xv = xv.clone()
    if kind == "nan inputs":
        xv[7, 3] = float("nan")
    elif kind == "inf inputs":
        xv[-1, 0] = float("inf")
    else:  # finite inputs whose logits overflow float32: the val loss is inf/nan
        xv[0] = 3e38
    return babysit.Task(base.model_factory, base.train, (xv, yv), base.loss_fn)


# defect 12: (the validation data, the CLI's one line)
NAN_VAL = [
    ("nan inputs", "the validation inputs hold NaN/inf (batch 0 of the val split)"),
    ("inf inputs", "the validation inputs hold NaN/inf (batch 0 of the val split)"),
    ("overflowing logits", "val_loss became"),
]


@pytest.mark.parametrize(("kind", "message"), NAN_VAL)
def test_a_nan_validation_metric_is_a_divergence_with_no_nan_checkpoint(
    tmp_path: Path, tiny_config: dict, kind: str, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = train(tiny_config, task=_nan_val_task(kind), out=tmp_path / "run", quiet=True)
    assert run.diverged and run.stopped == "diverged" and run.best == {}
    assert not list_checkpoints(run.dir / "checkpoints")  # no epoch=001-val_acc=nan.pt
    event = next(r for r in read_metrics(run.dir / "metrics.jsonl") if r.get("what") == "diverged")
    assert event["split"] == "val" and event["epoch"] == 1
    # the CLI: exit 1 (like a NaN training loss) and one line that says why
    monkeypatch.setattr("babysit.training.run.task_for", lambda cfg: _nan_val_task(kind))
    config = tmp_path / "c.toml"
    config.write_text(Config.from_dict(tiny_config).to_toml())
    code, lines = _cli("train", str(config), "--out", str(tmp_path / "cli"), "--quiet")
    assert code == 1 and message in lines[-1], lines
