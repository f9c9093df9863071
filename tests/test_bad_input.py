"""Bad input through the real CLI, one table per defect of issue 13 (the b half).

Every row is answered by exit 2 and one line on stderr, ``babysit: error: ...``, naming the
file, key or option at fault, with no traceback and nothing written; a few rows exit 1 with
one line where the run itself stopped (NaN inputs). Each table reproduced its defect on the
code before the fix (a traceback, exit 0 or a wrong line).
"""

from __future__ import annotations

import math
import os
import pickle
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tomli_w
import torch
from torch import nn
from typer.testing import CliRunner

import babysit
from babysit.cli import app
from babysit.data import _read_batch
from babysit.errors import ConfigError, DataError, TaskError, UserCodeError
from babysit.monitor.log import read_metrics
from babysit.optim.build import create_optimizer
from babysit.tasks import declares_task, get_task

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


def _write(path: Path, text: str | bytes) -> Path:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def refused(args: list[str], *needles: str, code: int = 2) -> str:
    """Run the CLI; assert ``code``, one line, no traceback, every needle in it; the line."""
    result = runner.invoke(app, args)
    assert not isinstance(result.exception, Exception) or isinstance(
        result.exception, SystemExit
    ), (args, result.exception)
    assert result.exit_code == code, (args, result.exit_code, result.output)
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert "Traceback" not in result.output, (args, result.output)
    errors = [ln for ln in lines if ln.startswith("babysit: ")]
    if code == 2:
        assert len(lines) == 1 and lines[0].startswith("babysit: error: "), (args, lines)
    else:  # a run that stopped: its progress lines, then one line saying why
        assert len(errors) == 1, (args, lines)
    for needle in needles:
        assert needle in errors[0], (args, needle, errors[0])
    return errors[0]


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cwd (a default run dir would land here) with the cwd importable."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def _nothing_written(root: Path, before: set[Path]) -> None:
    after = set(root.rglob("*"))
    assert after == before, sorted(str(p) for p in after - before)


# --- defect 4: an lr the model's dtype cannot hold -----------------------------------------
LR_TOO_LARGE = [
    ("sgd", "1e39"),
    ("momentum", "1e39"),
    ("nesterov", "3.5e38"),
    ("rmsprop", "1e308"),
    ("adagrad", "1e308"),
    ("adam", "1e38"),  # lr / (1 - beta1) = 1e39 on Adam's first step
]


@pytest.mark.parametrize(("rule", "lr"), LR_TOO_LARGE)
def test_an_lr_past_float32_is_refused_before_training(in_tmp: Path, rule: str, lr: str) -> None:
    config = _write(in_tmp / "c.toml", GOOD)
    before = set(in_tmp.rglob("*"))
    sets = ["--set", f"optim.rule={rule}", "--set", f"optim.lr={lr}"]
    refused(["train", str(config), *sets, "--out", "run", "--quiet"], "optim.lr", "float32")
    _nothing_written(in_tmp, before)


def test_the_lr_limit_is_the_parameters_dtype() -> None:
    for dtype, ok, too_big in ((torch.float16, 6e4, 7e4), (torch.float64, 1e39, math.inf)):
        model = nn.Linear(3, 2).to(dtype)
        create_optimizer(model.parameters(), "sgd", {"lr": ok})  # the dtype holds it
        if math.isfinite(too_big):
            with pytest.raises(ConfigError, match=str(dtype).removeprefix("torch.")):
                create_optimizer(model.parameters(), "sgd", {"lr": too_big})


def test_an_overflow_the_check_cannot_see_is_recorded_as_diverged(in_tmp: Path) -> None:
    # a momentum ramp drives Adam's beta1 from 0.9999 at step 1: lr / (1 - 0.9999) overflows
    config = _write(in_tmp / "c.toml", GOOD)
    sets = ["optim.rule=adam", "optim.lr=1e35", "schedule.mu_start=0.9999", "schedule.mu_epochs=1"]
    args = ["train", str(config), *[a for s in sets for a in ("--set", s)], "--out", "r", "-q"]
    refused(args, "run diverged", code=1)
    events = list(read_metrics(in_tmp / "r/metrics.jsonl"))
    assert [r["what"] for r in events if r.get("what") == "diverged"] == ["diverged"]


# --- defect 8: lr-find checks --out and --device before it sweeps ---------------------------
def _lr_find_rows(root: Path) -> list[tuple[list[str], str]]:
    a_file = _write(root / "a_file", "x")
    return [
        (["--out", str(a_file)], "is a file"),
        (["--out", str(a_file / "below")], "lies under the file"),
        (["--out", "/proc/babysit-lr-find"], "/proc"),
        (["--device", "tpu"], "--device"),
        (["--lr-max", "inf"], "--lr-max"),
        (["--lr-min", "nan"], "--lr-min"),
        (["--lr-min", "1", "--lr-max", "0.1"], "--lr-min"),
        (["--steps", "2"], "--steps"),
    ]


def test_lr_find_refuses_its_options_before_the_sweep(
    in_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import babysit.training.lr_find as lr_find_module

    def no_sweep(*args: object, **kwargs: object) -> None:
        raise AssertionError("the sweep ran before the options were checked")

    monkeypatch.setattr(lr_find_module, "lr_find", no_sweep)
    config = _write(in_tmp / "c.toml", GOOD)
    rows = _lr_find_rows(in_tmp)
    before = set(in_tmp.rglob("*"))
    for extra, needle in rows:
        refused(["lr-find", str(config), *extra], needle)
    _nothing_written(in_tmp, before)


# --- defect 9: the user's code failing is one line saying so --------------------------------
TASK_HEAD = """
import sys
import torch
import babysit
from torch import nn


def data(n=40):
    x = torch.randn(n, 4)
    return x, (x[:, 0] > 0).long()

"""

USER_FAILURES = [
    (
        "raises in a helper",
        "def helper():\n    return 1 / 0\n\n@babysit.task\ndef make():\n    return helper()\n",
        ["your code raised ZeroDivisionError: division by zero", "usertask:helper, line"],
    ),
    (
        "raises on import",
        "raise ValueError('no config for you')\n",
        ["importing usertask", "your code raised ValueError: no config for you"],
    ),
    ("sys.exit(0) on import", "sys.exit(0)\n", ["your code called sys.exit(0)", "usertask"]),
    (
        "sys.exit in the builder",
        "@babysit.task\ndef make():\n    sys.exit('bye')\n",
        ["called sys.exit('bye')", "usertask:make"],
    ),
    (
        "a TypeError inside the builder is not a bad option",
        "@babysit.task\ndef make():\n    return len(5)\n",
        ["your code raised TypeError", "usertask:make"],
    ),
    (
        "model factory raises",
        "def factory(cfg):\n    raise KeyError('width')\n\n@babysit.task\ndef make():\n"
        "    return babysit.Task(factory, data(), data(), nn.functional.cross_entropy)\n",
        ["your code raised KeyError: 'width'", "usertask:factory, line"],
    ),
    (
        "loss raises while training",
        "def loss(out, y):\n    raise RuntimeError('bad loss')\n\n@babysit.task\ndef make():\n"
        "    return babysit.Task(lambda c: nn.Linear(4, 2), data(), data(), loss)\n",
        ["your code raised RuntimeError: bad loss", "usertask:loss, line"],
    ),  # found while training: the run dir it started stays (as a killed run's would)
    (
        "Task with a bad direction",
        "@babysit.task\ndef make():\n    return babysit.Task(lambda c: nn.Linear(4, 2), data(), "
        "data(), nn.functional.cross_entropy, direction='up')\n",
        ["Task.direction must be 'max' or 'min'"],
    ),
    (
        "Task without a loss",
        "@babysit.task\ndef make():\n    return babysit.Task(lambda c: nn.Linear(4, 2), data(), "
        "data(), None)\n",
        ["Task.loss_fn must be a callable"],
    ),
]


@pytest.mark.parametrize(
    ("label", "body", "needles"), USER_FAILURES, ids=[r[0] for r in USER_FAILURES]
)
def test_the_users_code_failing_is_one_line_naming_it(
    in_tmp: Path, label: str, body: str, needles: list[str]
) -> None:
    sys.modules.pop("usertask", None)
    _write(in_tmp / "usertask.py", TASK_HEAD + body)
    config = _write(in_tmp / "c.toml", GOOD.replace('"digits-mlp"', '"usertask:make"'))
    refused(["train", str(config), "--out", "run", "--quiet"], *needles)
    assert (in_tmp / "run").exists() == ("training" in label)
    sys.modules.pop("usertask", None)


def test_debug_adds_the_traceback(in_tmp: Path) -> None:
    sys.modules.pop("usertask", None)
    _write(in_tmp / "usertask.py", TASK_HEAD + USER_FAILURES[0][1])
    result = runner.invoke(
        app,
        [
            "--debug",
            "train",
            "--out",
            "r",
            str(_write(in_tmp / "c.toml", GOOD.replace('"digits-mlp"', '"usertask:make"'))),
        ],
    )
    assert result.exit_code == 2
    assert "Traceback (most recent call last)" in result.output
    assert 'usertask.py", line' in result.output and "return 1 / 0" in result.output
    assert result.output.splitlines()[-1].startswith("babysit: error: task 'usertask:make'")
    sys.modules.pop("usertask", None)


def test_babysits_own_checks_raise_specific_errors() -> None:
    x, y = torch.randn(10, 3), torch.zeros(10, dtype=torch.long)
    with pytest.raises(TaskError, match="direction"):
        babysit.Task(lambda c: nn.Linear(3, 2), (x, y), (x, y), nn.functional.cross_entropy,
                     direction="up")  # fmt: skip
    with pytest.raises(TaskError, match="loss_fn"):
        babysit.Task(lambda c: nn.Linear(3, 2), (x, y), (x, y), 3)  # type: ignore[arg-type]
    task = babysit.Task(lambda c: nn.Linear(3, 2), (x, y[:7]), (x, y), nn.functional.cross_entropy)
    from babysit.splits import check_task

    with pytest.raises(DataError, match="split 'train'") as err:
        check_task(task)
    assert type(err.value) is DataError  # the split-length check: not a plain ValueError


# --- defect 13: config edge cases ------------------------------------------------------------
def _deep(depth: int) -> str:
    return "[" * depth + "]" * depth


CONFIG_EDGES = [
    ("seed 2**64", "[train]\nseed = 18446744073709551616\n", ["train.seed"]),
    ("seed negative", "[train]\nseed = -1\n", ["train.seed"]),
    ("epochs = true", "[train]\nepochs = true\n", ["train.epochs"]),
    ("batch_size = 64.0", "[train]\nbatch_size = 64.0\n", ["train.batch_size"]),
    ("sanity = 1", "[train]\nsanity = 1\n", ["train.sanity"]),
    ("report = 'yes'", "[train]\nreport = 'yes'\n", ["train.report"]),
    ("epochs = 1e308", "[train]\nepochs = 1e308\n", ["train.epochs"]),
    ("search.seed = 2**40", "[search]\nseed = 1099511627776\n", ["search.seed"]),
    ("50,000-deep array", f"[train]\nepochs = {_deep(50_000)}\n", ["train.epochs", "nested"]),
    ("40-deep options", f"[task]\noptions = {{ a = {_deep(40)} }}\n", ["task.options", "nested"]),
    ("empty file", "", ["holds no settings"]),
    ("comments only", "# nothing\n", ["holds no settings"]),
    ("split_seed = true", "[task]\noptions = { split_seed = true }\n", ["split_seed"]),
    ("split_seed = -1", "[task]\noptions = { split_seed = -1 }\n", ["split_seed"]),
    (
        "a model too large",
        "[model]\nhidden = [1000000000000]\n",
        ["model 'mlp'", "asks for", "TiB"],
    ),
    (
        "data too large",
        "[task]\nname = 'spiral-mlp'\noptions = { n_per_class = 100000000000000 }\n",
        ["make_spiral", "asks for"],
    ),
]


@pytest.mark.parametrize(
    ("label", "text", "needles"), CONFIG_EDGES, ids=[r[0] for r in CONFIG_EDGES]
)
def test_config_edge_cases_are_refused(
    in_tmp: Path, label: str, text: str, needles: list[str]
) -> None:
    config = _write(in_tmp / "c.toml", text)
    before = set(in_tmp.rglob("*"))
    line = refused(["train", str(config), "--out", "run", "--quiet"], *needles)
    assert "c.toml" in line or "task '" in line or "model '" in line or "make_spiral" in line
    _nothing_written(in_tmp, before)


def test_dev_zero_is_read_only_up_to_the_cap() -> None:
    refused(["train", "/dev/zero"], "/dev/zero", "larger than 1024 KiB")


class _Reduce:
    def __init__(self, fn: Callable[..., object], args: tuple[object, ...]) -> None:
        self.fn, self.args = fn, args

    def __reduce__(self) -> tuple[Callable[..., object], tuple[object, ...]]:
        return self.fn, self.args


CIFAR_BOMBS = [
    ("ndarray called", {b"data": _Reduce(np.ndarray, ((10**13,),)), b"labels": []}),
    ("ndarray (n, 3072)", {b"data": _Reduce(np.ndarray, ((10**9, 3072), "u1")), b"labels": []}),
    (
        "_reconstruct with a huge shape",
        {
            b"data": _Reduce(np.zeros(0).__reduce__()[0], (np.ndarray, (10**13,), b"b")),
            b"labels": [],
        },
    ),
]


@pytest.mark.parametrize(("label", "batch"), CIFAR_BOMBS, ids=[r[0] for r in CIFAR_BOMBS])
def test_the_cifar_reader_checks_shapes_before_allocating(
    tmp_path: Path, label: str, batch: dict[bytes, object]
) -> None:
    path = _write(tmp_path / "data_batch_1", pickle.dumps(batch, protocol=2))
    with pytest.raises(DataError, match="cannot be read as a CIFAR-10 batch"):
        _read_batch(path)


class _HugeObjectArray:
    """Pickles as an object array of 10**12 elements with two: numpy allocates the shape
    (8 TB of pointers) before it reads the elements."""

    def __reduce__(self) -> tuple[object, ...]:
        rebuild = np.zeros(0).__reduce__()[0]
        return rebuild, (np.ndarray, (0,), b"b"), (1, (10**12,), np.dtype(object), False, [1, 2])


def test_the_cifar_reader_refuses_object_arrays(tmp_path: Path) -> None:
    batch = {b"data": _HugeObjectArray(), b"labels": [0]}
    path = _write(tmp_path / "b", pickle.dumps(batch, protocol=2))
    with pytest.raises(DataError, match="object array"):
        _read_batch(path)


# --- defect 14: messages ---------------------------------------------------------------------
def test_lr_inf_names_its_file_wherever_it_came_from(in_tmp: Path) -> None:
    bad = _write(in_tmp / "inf.toml", GOOD + "[optim]\nlr = inf\n")
    refused(["train", str(bad), "--out", "r"], "inf.toml:", "optim.lr = inf")
    good = _write(in_tmp / "c.toml", GOOD)
    refused(["train", str(good), "--set", "optim.lr=inf", "--out", "r"], "c.toml (with --set)")
    refused(["sanity", "--task", "digits-mlp", "--set", "optim.lr=inf"], "optim.lr = inf")
    with pytest.raises(ConfigError, match=r"<dict>: optim.lr = inf"):
        babysit.train({"optim": {"lr": math.inf}}, out=in_tmp / "api")
    config_object = babysit.load_config(good)
    with pytest.raises(ConfigError, match=r"setting optim.lr in Python: lr = inf"):
        config_object.optim.lr = math.inf  # a ConfigError, not pydantic's multi-line error
    assert not (in_tmp / "r").exists() and not (in_tmp / "api").exists()


NAN_TASK = (
    TASK_HEAD
    + """
from torch.utils.data import DataLoader, TensorDataset


@babysit.task
def make(bad="nan", at=50):
    x, y = data(200)
    x[at, 1] = float(bad)
    train = DataLoader(TensorDataset(x, y), batch_size=50)  # in order: row `at` is known
    return babysit.Task(lambda c: nn.Linear(4, 2), train, data(), nn.functional.cross_entropy)
"""
)


@pytest.mark.parametrize(("bad", "at", "batch"), [("nan", 0, 1), ("inf", 150, 4), ("nan", 50, 2)])
def test_non_finite_inputs_are_named_not_blamed_on_the_lr(
    in_tmp: Path, bad: str, at: int, batch: int
) -> None:
    sys.modules.pop("nantask", None)
    _write(in_tmp / "nantask.py", NAN_TASK)
    name = f'"nantask:make"\noptions = {{ bad = "{bad}", at = {at} }}'
    config = _write(in_tmp / "c.toml", GOOD.replace('"digits-mlp"', name))
    line = refused(["train", str(config), "--out", "r", "-q"], code=1)
    which = "NaN" if bad == "nan" else "inf"
    assert f"the inputs hold {which} at batch {batch} of epoch 1" in line
    assert "lower optim.lr" not in line
    sys.modules.pop("nantask", None)


def test_lr_find_names_non_finite_inputs(in_tmp: Path) -> None:
    sys.modules.pop("nantask", None)
    _write(in_tmp / "nantask.py", NAN_TASK)
    config = _write(in_tmp / "c.toml", GOOD.replace('"digits-mlp"', '"nantask:make"'))
    refused(["lr-find", str(config), "--out", "lr"], "the inputs hold NaN at batch 2")
    assert not (in_tmp / "lr").exists()
    sys.modules.pop("nantask", None)


USAGE_ERRORS = [
    (["train", "--bogus"], "--bogus"),
    (["lr-find", "c.toml", "--steps", "x"], "--steps"),
    (["no-such-command"], "no-such-command"),
    (["train", "c.toml", "--device"], "--device"),
    (["search", "c.toml", "--workers", "many"], "--workers"),
    (["gradcheck", "--task"], "--task"),
    (["report"], "run_dir"),
]


@pytest.mark.parametrize(
    ("args", "needle"), USAGE_ERRORS, ids=[" ".join(a) for a, _ in USAGE_ERRORS]
)
def test_usage_errors_are_one_line(in_tmp: Path, args: list[str], needle: str) -> None:
    _write(in_tmp / "c.toml", GOOD)
    line = refused(args, needle)
    assert line.endswith("--help)") and "(see babysit" in line


def test_resume_with_fewer_epochs_says_so_and_leaves_the_run(in_tmp: Path) -> None:
    config = _write(in_tmp / "c.toml", GOOD.replace("epochs = 1", "epochs = 2"))
    assert runner.invoke(app, ["train", str(config), "--out", "r", "-q"]).exit_code == 0
    saved = (in_tmp / "r/config.toml").read_bytes()
    files = {p: p.stat().st_mtime_ns for p in (in_tmp / "r").rglob("*")}
    refused(
        ["train", "--resume", "--out", "r", "--set", "train.epochs=1", "-q"],
        "train.epochs = 1 is fewer than the 2 epochs",
    )
    assert (in_tmp / "r/config.toml").read_bytes() == saved
    assert {p: p.stat().st_mtime_ns for p in (in_tmp / "r").rglob("*")} == files


# --- defect 15: a config names code; only declared tasks are called --------------------------
CALLED = "called.txt"
UNDECLARED = f"""
import pathlib
import babysit

def make(**kw):
    pathlib.Path({CALLED!r}).write_text("ran")

class Make:
    def __init__(self, **kw):
        pathlib.Path({CALLED!r}).write_text("ran")

class _Anything:
    def __getattr__(self, name):
        return True
    def __call__(self, **kw):
        pathlib.Path({CALLED!r}).write_text("ran")

anything = _Anything()
"""

REFUSED_TASKS = [
    ("os:system", '{ command = "touch called.txt" }', "standard library"),
    ("subprocess:getoutput", '{ cmd = "touch called.txt" }', "standard library"),
    ("builtins:exec", '{ source = "open(\\"called.txt\\", \\"w\\")" }', "standard library"),
    ("os.path:join", "{}", "standard library"),
    ("undeclared:make", "{}", "function make does not declare itself a task"),
    ("undeclared:Make", "{}", "class Make does not declare itself a task"),
    ("undeclared:anything", "{}", "_Anything object does not declare itself a task"),
    ("undeclared.py:make", "{}", "does not declare itself a task"),
    ("babysit:train", "{}", "does not declare itself a task"),
]


@pytest.mark.parametrize(
    ("name", "options", "needle"), REFUSED_TASKS, ids=[r[0] for r in REFUSED_TASKS]
)
def test_only_a_declared_task_is_called(in_tmp: Path, name: str, options: str, needle: str) -> None:
    sys.modules.pop("undeclared", None)
    _write(in_tmp / "undeclared.py", UNDECLARED)
    text = f'[task]\nname = "{name}"\noptions = {options}\n[train]\nepochs = 1\n'
    config = _write(in_tmp / "c.toml", text)
    refused(["train", str(config), "--out", "r", "-q"], name, needle)
    refused(["sanity", str(config)], needle)
    assert not (in_tmp / CALLED).exists() and not (in_tmp / "r").exists()
    sys.modules.pop("undeclared", None)


def test_resume_on_a_foreign_run_dir_does_not_run_what_it_names(in_tmp: Path) -> None:
    config = _write(in_tmp / "c.toml", GOOD)
    assert runner.invoke(app, ["train", str(config), "--out", "r", "-q"]).exit_code == 0
    saved = in_tmp / "r/config.toml"
    data = tomllib.loads(saved.read_text())
    data["task"] |= {"name": "os:system", "options": {"command": f"touch {CALLED}"}}
    saved.write_text(tomli_w.dumps(data))
    refused(["train", "--resume", "--out", "r", "-q"], "os:system", "standard library")
    assert not (in_tmp / CALLED).exists()


DECLARED = [
    ("decorated", "@babysit.task\ndef make():\n"),
    ("annotated", "def make() -> babysit.Task:\n"),
    ("annotated, postponed", "def make() -> 'babysit.Task':\n"),
    ("annotated by name", "from babysit import Task\ndef make() -> 'Task':\n"),
]


@pytest.mark.parametrize(("label", "head"), DECLARED, ids=[r[0] for r in DECLARED])
def test_a_declared_task_is_built(in_tmp: Path, label: str, head: str) -> None:
    body = "    return babysit.Task(lambda c: nn.Linear(4, 2), data(), data(), nn.functional.cross_entropy)\n"  # noqa: E501
    _write(in_tmp / "declared.py", TASK_HEAD + head + body)
    task = get_task(f"{in_tmp / 'declared.py'}:make")
    assert isinstance(task, babysit.Task)


def test_declares_task_looks_and_never_calls() -> None:
    class Liar:
        def __getattr__(self, name: str) -> bool:
            return True

    assert not declares_task(Liar()) and not declares_task(os.system) and not declares_task(len)
    assert declares_task(babysit.tasks.TASKS["digits-mlp"])  # bundled tasks are declared
    with pytest.raises(TypeError, match="decorates a function"):
        babysit.task(Liar())  # type: ignore[type-var]


def test_a_user_code_error_keeps_its_traceback_for_the_api(in_tmp: Path) -> None:
    sys.modules.pop("usertask", None)
    _write(in_tmp / "usertask.py", TASK_HEAD + USER_FAILURES[0][1])
    with pytest.raises(UserCodeError) as err:
        get_task("usertask:make")
    assert isinstance(err.value.__cause__, ZeroDivisionError)
    assert "return 1 / 0" in err.value.traceback
    sys.modules.pop("usertask", None)


def test_an_allocation_that_fails_says_how_much_was_asked(in_tmp: Path) -> None:
    from babysit._memory import allocation_message, check_fits, format_bytes

    assert format_bytes(40 * 1024**4) == "40 TiB" and format_bytes(512) == "512 bytes"
    cpu = RuntimeError(
        "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: "
        "you tried to allocate 43980465111040 bytes. Error code 12 (Cannot allocate memory)"
    )
    assert allocation_message(cpu) == "torch could not allocate 40 TiB of memory"
    cuda = torch.cuda.OutOfMemoryError(
        "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79 GiB"
    )
    assert allocation_message(cuda) == "CUDA out of memory. Tried to allocate 2.00 GiB"
    assert allocation_message(ValueError("no")) is None
    with pytest.raises(ConfigError, match=r"x asks for 1 EiB of memory, more than the"):
        check_fits("x", 1 << 60, fix="less")
    # a user's factory asking torch for 40 TiB: one line with the size, not a traceback
    sys.modules.pop("usertask", None)
    body = (
        "@babysit.task\ndef make():\n    return babysit.Task(lambda c: nn.Linear(10**7, 10**6),"
        " data(), data(), nn.functional.cross_entropy)\n"
    )
    _write(in_tmp / "usertask.py", TASK_HEAD + body)
    config = _write(in_tmp / "c.toml", GOOD.replace('"digits-mlp"', '"usertask:make"'))
    refused(["train", str(config), "--out", "r", "-q"], "out of memory", "TiB")
    assert not (in_tmp / "r").exists()
    sys.modules.pop("usertask", None)
