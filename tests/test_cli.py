"""The command line: bad input gives one line and exit 2, writing nothing."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from babysit.cli import app

runner = CliRunner()

GOOD = """
[task]
name = "digits-mlp"
[model]
hidden = [16]
[train]
epochs = 1
report = false
"""


def _write(tmp_path: Path, text: str, name: str = "c.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


class _Evil:
    def __reduce__(self) -> tuple:
        return (os.system, ("touch PWNED",))


def _cifar_with_evil_pickle(tmp_path: Path) -> Path:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    ok = {b"data": np.zeros((10, 3072), np.uint8), b"labels": [0] * 10}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(pickle.dumps(ok))
    (folder / "data_batch_3").write_bytes(pickle.dumps({b"data": _Evil(), b"labels": [0]}))
    return folder


def _bad_inputs(tmp_path: Path) -> list[tuple[str, list[str], str]]:
    good = _write(tmp_path, GOOD)
    user = tmp_path / "mytask.py"
    user.write_text("import does_not_exist_anywhere\n")
    wrong = tmp_path / "wrongtask.py"
    wrong.write_text("import babysit\n@babysit.task\ndef make():\n    return 42\n")
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    corrupt = tmp_path / "corrupt_run"
    (corrupt / "checkpoints").mkdir(parents=True)
    (corrupt / "config.toml").write_text(GOOD)
    (corrupt / "checkpoints" / "epoch=001-val_acc=0.5000.pt").write_bytes(b"not a checkpoint")
    cifar = _cifar_with_evil_pickle(tmp_path)
    out = str(tmp_path / "out")
    return [
        ("missing file", ["train", str(tmp_path / "nope.toml"), "--out", out], "not found"),
        (
            "toml syntax",
            ["train", str(_write(tmp_path, "[train\n", "s.toml")), "--out", out],
            "TOML",
        ),
        ("unknown key", ["train", str(good), "--set", "train.epoc=2", "--out", out], "epoc"),
        ("wrong type", ["train", str(good), "--set", "train.epochs=many", "--out", out], "epochs"),
        ("negative lr", ["train", str(good), "--set", "optim.lr=-0.1", "--out", out], "optim.lr"),
        ("unknown task", ["train", str(good), "--set", "task.name=mnist", "--out", out], "task"),
        ("unknown rule", ["train", str(good), "--set", "optim.rule=adamw", "--out", out], "rule"),
        (
            "unimportable task",
            ["train", str(good), "--set", f'task.name="{user}:make"', "--out", out],
            "does_not_exist_anywhere",
        ),
        (
            "task returns wrong type",
            ["train", str(good), "--set", f'task.name="{wrong}:make"', "--out", out],
            "expected babysit.Task",
        ),
        ("out is a file", ["train", str(good), "--out", str(a_file)], "is a file"),
        ("unwritable out", ["train", str(good), "--out", "/proc/babysit-run"], "/proc"),
        ("corrupt checkpoint", ["train", "--resume", "--out", str(corrupt)], "corrupt"),
        (
            "malicious cifar pickle",
            [
                "train",
                str(good),
                "--set",
                "task.name=cifar10-convnet",
                "--set",
                f'task.data_dir="{cifar}"',
                "--out",
                out,
            ],
            "refuse",
        ),
        ("bad --set", ["train", str(good), "--set", "optim.lr", "--out", out], "KEY=VALUE"),
        ("zero batch", ["train", str(good), "--set", "train.batch_size=0", "--out", out], "batch"),
        ("no config", ["train", "--out", out], "CONFIG"),
        ("bad device", ["train", str(good), "--device", "tpu", "--out", out], "--device"),
        (
            "ema and swa",
            [
                "train",
                str(good),
                "--set",
                "train.ema=0.999",
                "--set",
                "train.swa=true",
                "--out",
                out,
            ],
            "keep one",
        ),
    ]


def test_at_least_twelve_bad_inputs_exit_2_with_one_line(tmp_path: Path) -> None:
    monkey_cwd = Path.cwd()
    os.chdir(tmp_path)  # the malicious pickle would "touch PWNED" here
    try:
        cases = _bad_inputs(tmp_path)
        assert len(cases) >= 12
        for label, args, needle in cases:
            code, output = _run(*args)
            assert code == 2, (label, code, output)
            lines = [ln for ln in output.strip().splitlines() if ln.strip()]
            assert len(lines) == 1, (label, output)
            assert lines[0].startswith("babysit: error:"), (label, output)
            assert needle.lower() in lines[0].lower(), (label, needle, output)
            assert not (tmp_path / "out").exists(), f"{label}: left a half-written run dir"
        assert not (tmp_path / "PWNED").exists()
    finally:
        os.chdir(monkey_cwd)


USER_TASK = """
import torch
import babysit


@babysit.task
def make(kind):
    x, y = torch.randn(40, 4), torch.randint(0, 3, (40,))
    train = {
        "string": "oops",
        "dict": {"x": x, "y": y},
        "ints": [1, 2, 3],
        "mismatched": (x, y[:30]),
    }[kind]
    return babysit.Task(
        lambda cfg: torch.nn.Linear(4, 3), train, (x, y), torch.nn.functional.cross_entropy
    )
"""


@pytest.mark.parametrize("kind", ["string", "dict", "ints", "mismatched"])
def test_a_train_split_of_the_wrong_type_exits_2_with_one_line(tmp_path: Path, kind: str) -> None:
    task_file = _write(tmp_path, USER_TASK, "usertask.py")
    config = _write(
        tmp_path, GOOD.replace('"digits-mlp"', f'"{task_file}:make"\noptions = {{kind = "{kind}"}}')
    )
    out = tmp_path / "out"
    result = runner.invoke(app, ["train", str(config), "--out", str(out)])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("babysit: error:"), result.stderr
    assert "split 'train'" in lines[0] and "fix:" in lines[0]
    assert not out.exists()


def test_corrupt_checkpoint_is_left_untouched(tmp_path: Path) -> None:
    run = tmp_path / "r"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.toml").write_text(GOOD)
    ckpt = run / "checkpoints" / "epoch=001-val_acc=0.5000.pt"
    ckpt.write_bytes(b"garbage")
    code, _ = _run("train", "--resume", "--out", str(run))
    assert code == 2 and ckpt.read_bytes() == b"garbage"
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints", "config.toml"]


def test_train_then_resume_through_the_cli(tmp_path: Path) -> None:
    good = _write(tmp_path, GOOD)
    out = tmp_path / "run"
    code, output = _run("train", str(good), "--out", str(out), "--quiet")
    assert code == 0, output
    assert f"run dir: {out}" in output
    code, output = _run(
        "train", "--resume", "--out", str(out), "--quiet", "--set", "train.epochs=2"
    )
    assert code == 0, output
    assert "epochs = 2" in (out / "config.toml").read_text()  # the run now has two epochs
    assert "hidden = [\n    16,\n]" in (out / "config.toml").read_text()  # still the run's model


def test_train_shows_the_gate_epochs_findings_and_report_unless_quiet(tmp_path: Path) -> None:
    good = _write(tmp_path, GOOD)
    out = tmp_path / "run"
    gated = ["--set", "train.sanity=true", "--set", "train.report=true"]
    code, output = _run("train", str(good), *gated, "--out", str(out))
    assert code == 0, output
    assert "sanity checks" in output and "overfit_small" in output  # the gate's table
    assert "epoch 1  train_loss" in output
    findings = json.loads((out / "findings.json").read_text())
    assert findings and all(f["message"] in output for f in findings)
    assert f"report written to {out / 'report.html'}" in output
    code, output = _run("train", str(good), *gated, "--out", str(tmp_path / "q"), "--quiet")
    assert code == 0 and output.strip() == f"run dir: {tmp_path / 'q'}"


def test_diverged_run_exits_1(tmp_path: Path) -> None:
    good = _write(tmp_path, GOOD)
    code, output = _run(
        "train",
        str(good),
        "--set",
        "optim.rule=sgd",
        "--set",
        "optim.lr=1e6",
        "--out",
        str(tmp_path / "d"),
        "--quiet",
    )
    assert code == 1
    assert "diverged" in output and "(lr 1e+06)" in output  # even with --quiet


def test_console_script_help_runs() -> None:
    exe = Path(sys.executable).parent / "babysit"
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=True)
    for command in ("train", "demo", "gradcheck", "sanity", "report"):
        assert command in out.stdout
