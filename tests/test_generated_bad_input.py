"""Generated bad input: hypothesis draws malformed configs and argument lists for the CLI.

Each case is bad on purpose: a wrong type, a non-finite or out-of-range number, an unknown
key or section, a huge value, deep nesting, an empty, binary, oversized or wrongly encoded
file, a task string that is not a declared task, a malformed ``--set`` or option. The CLI
must answer each with exit 2 and one line, ``babysit: error: ...``, naming the key, option
or file at fault, with no traceback and nothing written. The cases run in-process (typer's
runner: torch is imported once) and a sample of them through real subprocesses. The counts
are printed.
"""

from __future__ import annotations

import datetime
import math
import os
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from typer.testing import CliRunner

from babysit.cli import app
from babysit.config import Config
from babysit.models import allowed_keys
from babysit.optim.hparams import HPARAMS

hypothesis = pytest.importorskip("hypothesis", reason="hypothesis is a dev dependency")
st = pytest.importorskip("hypothesis.strategies")
HealthCheck = hypothesis.HealthCheck

runner = CliRunner()
BASE: dict[str, Any] = {
    "task": {"name": "digits-mlp"},
    "model": {"hidden": [8]},
    "train": {"epochs": 1, "report": False},
}
COMMANDS = ("train", "gradcheck", "sanity", "lr-find", "search")
TAKES_OUT = {"train", "lr-find", "search"}


@dataclass(frozen=True)
class Case:
    """One bad input: the files of its directory, the arguments, what the line must name."""

    kind: str
    args: tuple[str, ...]
    files: tuple[tuple[str, bytes], ...] = ()
    needles: tuple[str, ...] = ()


# --- values that no key accepts -------------------------------------------------------------
NON_FINITE = st.sampled_from([math.nan, math.inf, -math.inf])
WORDS = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=30)
DATETIMES = st.datetimes(
    min_value=datetime.datetime(1900, 1, 1), max_value=datetime.datetime(2100, 1, 1)
)
LISTS = st.lists(st.integers(-5, 5), min_size=1, max_size=4)
TABLES = st.dictionaries(st.from_regex(r"[a-z]{1,6}", fullmatch=True), st.integers(), min_size=1)


def _number_bad(key: str) -> st.SearchStrategy[Any]:
    """Values outside a hyperparameter's range or type (optim/hparams.py is the oracle)."""
    hp = HPARAMS[key]
    r = hp.range
    bad: list[st.SearchStrategy[Any]] = [
        NON_FINITE,
        st.booleans(),
        WORDS,
        LISTS,
        TABLES,
        DATETIMES,
    ]
    if hp.type is float:
        bad.append(st.integers(min_value=10**309, max_value=10**400))  # no float holds it
    below = st.floats(max_value=r.low, exclude_max=r.low_closed, allow_nan=False, min_value=-1e308)
    bad.append(below.map(int) if hp.type is int else below)
    if math.isfinite(r.high):
        bad.append(st.floats(min_value=r.high, exclude_min=r.high_closed, max_value=1e308))
    if hp.type is int:
        bad.append(st.floats(allow_nan=False, allow_infinity=False, min_value=1, max_value=1e6))
    return st.one_of(bad)


def _bool_bad() -> st.SearchStrategy[Any]:
    return st.one_of(st.integers(-3, 3), st.floats(allow_nan=True), WORDS, LISTS, TABLES)


def _name_bad(allowed: tuple[str, ...]) -> st.SearchStrategy[Any]:
    words = WORDS.filter(lambda w: w not in allowed and w.strip() != "")
    return st.one_of(words, st.integers(), st.booleans(), LISTS, TABLES)


SEEDS = {"train.seed": 2**63, "search.seed": 2**32}
NAMES = {
    "optim.rule": ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "lbfgs"),
    "schedule.kind": ("none", "step", "exp", "inv", "plateau"),
    "train.device": ("auto", "cpu", "cuda"),
    "search.sampler": ("random", "tpe", "gp"),
    "search.pruner": ("none", "median", "sh", "hyperband"),
    "search.direction": ("max", "min"),
}
BOOLS = ("train.sanity", "train.gradcheck", "train.report")
NUMBERS = tuple(k for k in HPARAMS if not k.startswith("model."))


@st.composite
def _bad_key_value(draw: st.DrawFn) -> tuple[str, Any]:
    """A known dotted key and a value it must refuse."""
    family = draw(st.sampled_from(["number", "seed", "bool", "name", "top_k"]))
    if family == "number":
        key = draw(st.sampled_from(NUMBERS))
        return key, draw(_number_bad(key))
    if family == "seed":
        key = draw(st.sampled_from(sorted(SEEDS)))
        big = st.integers(min_value=SEEDS[key], max_value=2**200)
        return key, draw(st.one_of(big, st.integers(max_value=-1), st.floats(), st.booleans()))
    if family == "bool":
        return draw(st.sampled_from(BOOLS)), draw(_bool_bad())
    if family == "top_k":
        return "search.top_k", draw(st.one_of(st.integers(max_value=0), st.booleans(), WORDS))
    key = draw(st.sampled_from(sorted(NAMES)))
    return key, draw(_name_bad(NAMES[key]))


def _toml(data: dict[str, Any]) -> bytes:
    return tomli_w.dumps(data).encode()


def _literal(value: Any) -> str:
    """A value as the TOML text after ``--set key=``."""
    return tomli_w.dumps({"v": value}).partition("=")[2].strip()


def _with(key: str, value: Any) -> dict[str, Any]:
    section, _, name = key.partition(".")
    data = {k: dict(v) for k, v in BASE.items()}
    data.setdefault(section, {})[name] = value
    return data


@st.composite
def _command(draw: st.DrawFn, config: str) -> tuple[str, ...]:
    command = draw(st.sampled_from(COMMANDS))
    out = ("--out", "out") if command in TAKES_OUT else ()
    return (command, config, *out)


@st.composite
def key_value_cases(draw: st.DrawFn) -> Case:
    """A known key with a bad value: in the file, or given with --set."""
    key, value = draw(_bad_key_value())
    if draw(st.booleans()):
        return Case(
            "bad value", draw(_command("c.toml")), (("c.toml", _toml(_with(key, value))),), (key,)
        )
    text = _literal(value)
    args = (*draw(_command("c.toml")), "--set", f"{key}={text}")
    return Case("bad --set value", args, (("c.toml", _toml(BASE)),), (key,))


IDENT = st.from_regex(r"[a-z][a-z0-9_]{0,12}", fullmatch=True)
ODD_KEYS = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1)


def _fields(section: str) -> set[str]:
    model = Config.model_fields[section].annotation
    return set(getattr(model, "model_fields", {}))


@st.composite
def unknown_key_cases(draw: st.DrawFn) -> Case:
    """A key no table has: in a known section, a new section, [model] or task.options."""
    where = draw(st.sampled_from(["optim", "schedule", "train", "search", "task", "top", "model"]))
    name = draw(st.one_of(IDENT, ODD_KEYS))
    data = {k: dict(v) for k, v in BASE.items()}
    if where == "top":
        hypothesis.assume(name not in Config.model_fields)
        data[name] = {"x": 1}
    elif where == "model":
        hypothesis.assume(name not in allowed_keys("mlp"))
        data["model"][name] = 1
    else:
        hypothesis.assume(name not in _fields(where))
        data.setdefault(where, {})[name] = 1
    return Case("unknown key", draw(_command("c.toml")), (("c.toml", _toml(data)),), (name,))


@st.composite
def model_cases(draw: st.DrawFn) -> Case:
    """[model] values the bundled mlp refuses, huge widths included."""
    key = draw(
        st.sampled_from(["hidden", "activation", "dropout", "init", "init_std", "bias_init"])
    )
    if key == "hidden":
        width = st.one_of(
            st.integers(max_value=0),
            st.integers(min_value=10**11, max_value=10**30),  # more memory than exists
            st.floats(),
            st.booleans(),
            WORDS,
        )
        value: Any = draw(st.one_of(st.lists(width, min_size=1, max_size=3), WORDS, st.integers()))
    elif key in ("activation", "init"):
        value = draw(_name_bad(("relu", "tanh", "sigmoid", "leaky_relu", "he", "xavier", "normal")))
    elif key == "dropout":
        value = draw(_number_bad("model.dropout"))
    else:
        value = draw(st.one_of(NON_FINITE, WORDS, st.booleans(), LISTS))
        if key == "init_std":
            value = draw(st.one_of(st.just(value), st.floats(max_value=-1e-9, min_value=-1e300)))
    data = _with(f"model.{key}", value)
    return Case("bad model", draw(_command("c.toml")), (("c.toml", _toml(data)),), (key,))


@st.composite
def deep_cases(draw: st.DrawFn) -> Case:
    """Arrays or inline tables nested deeper than a config's values go, up to 60,000 deep."""
    depth = draw(st.one_of(st.integers(33, 200), st.integers(900, 60_000)))
    array = draw(st.booleans())
    value = "[" * depth + "]" * depth if array else "{a=" * depth + "1" + "}" * depth
    key = draw(st.sampled_from(["train.epochs", "task.options", "optim.lr", "search.space"]))
    section, _, name = key.partition(".")
    if draw(st.booleans()):
        text = f"[{section}]\n{name} = {value}\n"
        return Case("deep nesting", draw(_command("c.toml")), (("c.toml", text.encode()),), (key,))
    args = (*draw(_command("c.toml")), "--set", f"{key}={value}")
    return Case("deep --set", args, (("c.toml", _toml(BASE)),), (key,))


def _config_like(raw: bytes) -> bool:
    """Whether bytes happen to be a config babysit would run (then they are not bad input)."""
    try:
        data = tomllib.loads(raw.decode("utf-8-sig"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError, RecursionError):
        return False
    return (
        bool(data)
        and all(isinstance(v, dict) for v in data.values())
        and set(data) <= set(Config.model_fields)
    )


ENCODINGS = ("utf-16", "utf-16-be", "utf-32", "latin-1", "cp1252", "shift_jis", "cp037")


@st.composite
def file_cases(draw: st.DrawFn) -> Case:
    """Empty, blank, comment-only, binary, oversized and wrongly encoded config files."""
    kind = draw(st.sampled_from(["empty", "binary", "encoding", "oversized"]))
    if kind == "empty":
        raw = draw(
            st.sampled_from([b"", b"\n", b"   \n\t\n", b"# nothing here\n", b"\xef\xbb\xbf"])
        )
    elif kind == "binary":
        raw = draw(st.binary(min_size=1, max_size=4096).filter(lambda b: not _config_like(b)))
    elif kind == "encoding":
        text = tomli_w.dumps({**BASE, "task": {"name": "digits-mlp", "data_dir": "café-ü-日本"}})
        raw = text.encode(draw(st.sampled_from(ENCODINGS)), errors="replace")
        hypothesis.assume(not _config_like(raw))
    else:
        size = draw(st.integers((1 << 20) + 1, 3 << 20))
        raw = (b"# " + b"x" * 78 + b"\n") * (size // 80 + 1)
    name = draw(st.sampled_from(["c.toml", "config", "wéird name.toml", "c.toml.bak"]))
    return Case(f"{kind} file", draw(_command(name)), ((name, raw),), (name,))


USER_MODULE = b"""
import babysit

def undeclared(**kw):
    open("CALLED", "w").write("the config ran me")

class Builder:
    pass

value = 3
"""


@st.composite
def task_cases(draw: st.DrawFn) -> Case:
    """task.name values that are not declared tasks, or name nothing that exists."""
    name = draw(
        st.one_of(
            st.sampled_from(
                [
                    "os:system",
                    "subprocess:getoutput",
                    "builtins:eval",
                    "shutil:rmtree",
                    "importlib:import_module",
                    "posixpath:join",
                    "babysit:train",
                    "babysit.tasks:Task",
                    "usermod:undeclared",
                    "usermod:Builder",
                    "usermod:value",
                    "usermod:missing",
                    "usermod.py:undeclared",
                    "/etc/passwd:x",
                    ":",
                    "a:",
                    ":b",
                    "",
                ]
            ),
            st.builds(lambda m, f: f"{m}:{f}", IDENT.map(lambda s: f"no_such_{s}"), IDENT),
            st.builds(lambda m: f"{m}.py:make", WORDS.filter(lambda w: "\x00" not in w)),
            WORDS.filter(lambda w: ":" not in w and w not in ("digits-mlp",)),
        )
    )
    options = draw(st.sampled_from([{}, {"command": "touch CALLED"}, {"cmd": "touch CALLED"}]))
    data = {**BASE, "task": {"name": name, "options": options}}
    files = (("c.toml", _toml(data)), ("usermod.py", USER_MODULE))
    return Case("bad task", draw(_command("c.toml")), files, ("task",))


@st.composite
def argument_cases(draw: st.DrawFn) -> Case:
    """Malformed --set, options of the wrong type or range, unknown options and commands."""
    kind = draw(st.sampled_from(["set", "device", "out", "lr-find", "option", "command", "search"]))
    config = (("c.toml", _toml(BASE)), ("a_file", b"x"))
    if kind == "set":
        text = draw(
            st.one_of(
                st.sampled_from(["optim.lr", "=1", ".=1", "a..b=1", "optim..lr=1", " =1", "."]),
                IDENT,  # no '='
            )
        )
        return Case(
            "malformed --set",
            ("train", "c.toml", "--out", "out", "--set", text),
            config,
            ("--set",),
        )
    if kind == "device":
        device = draw(WORDS.filter(lambda w: w not in ("cpu", "cuda") and not w.startswith("-")))
        command = draw(st.sampled_from(["train", "lr-find"]))
        return Case(
            "bad --device",
            (command, "c.toml", "--out", "out", "--device", device),
            config,
            ("--device",),
        )
    if kind == "out":
        out = draw(st.sampled_from(["a_file", "a_file/run", "c.toml", "/proc/babysit-x"]))
        command = draw(st.sampled_from(["train", "lr-find", "search"]))
        return Case("bad --out", (command, "c.toml", "--out", out), config, ("--out",))
    if kind == "lr-find":
        option = draw(st.sampled_from(["--steps", "--lr-min", "--lr-max"]))
        if option == "--steps":
            value = draw(st.one_of(st.integers(max_value=4).map(str), WORDS.filter(_not_int)))
        else:
            bad = st.one_of(NON_FINITE, st.floats(max_value=0), st.just(1e9))
            value = (
                str(draw(bad))
                if option == "--lr-min"
                else draw(st.sampled_from(["nan", "inf", "-1", "0", "1e-9"]))
            )
        return Case(
            "bad lr-find option",
            ("lr-find", "c.toml", "--out", "out", option, value),
            config,
            (option.removeprefix("--").split("-")[0],),
        )
    if kind == "option":
        name = "--" + draw(IDENT.filter(lambda s: s not in _KNOWN_OPTIONS))
        command = draw(st.sampled_from(COMMANDS))
        return Case("unknown option", (command, "c.toml", name), config, (name,))
    if kind == "command":
        name = draw(IDENT.filter(lambda s: s not in (*COMMANDS, "demo", "worker", "report")))
        return Case("unknown command", (name, "c.toml"), config, (name,))
    workers = draw(st.one_of(st.integers(max_value=0).map(str), WORDS.filter(_not_int)))
    return Case(
        "bad --workers",
        ("search", "c.toml", "--out", "out", "--workers", workers),
        config,
        ("workers",),
    )


_KNOWN_OPTIONS = {"set", "out", "resume", "device", "quiet", "task", "steps", "lr_min", "help"}


def _not_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return not text.startswith("-")
    return False


BAD_INPUT = st.one_of(
    key_value_cases(),
    key_value_cases(),  # twice: the widest family (every key, every way to be wrong)
    unknown_key_cases(),
    model_cases(),
    deep_cases(),
    file_cases(),
    task_cases(),
    argument_cases(),
)


# --- running a case ---------------------------------------------------------------------------
def _listing(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if "__pycache__" not in p.parts}


def _check(case: Case, code: int, output: str, root: Path, before: set[str]) -> None:
    lines = [ln for ln in output.splitlines() if ln.strip()]
    assert code == 2, (case, code, output[-2000:])
    assert len(lines) == 1 and lines[0].startswith("babysit: error: "), (case, lines[:5])
    assert "Traceback" not in output, (case, output[-2000:])
    for needle in case.needles:  # as given, or as repr() shows it (escaped)
        shown = {needle.lower(), repr(needle)[1:-1].lower()}
        assert any(n in lines[0].lower() for n in shown), (case, needle, lines[0])
    assert _listing(root) == before, (case, sorted(_listing(root) - before))


def _setup(case: Case, root: Path) -> set[str]:
    for name, content in case.files:
        (root / name).write_bytes(content)
    return _listing(root)


def run_in_process(case: Case, base: Path) -> None:
    cwd, path, modules = os.getcwd(), list(sys.path), set(sys.modules)
    with tempfile.TemporaryDirectory(dir=base) as tmp:
        root = Path(tmp)
        before = _setup(case, root)
        os.chdir(root)
        try:
            result = runner.invoke(app, list(case.args))
        finally:
            os.chdir(cwd)
            sys.path[:] = path
            for name in set(sys.modules) - modules:
                if name == "usermod" or name.startswith("_babysit_task_"):
                    del sys.modules[name]
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise AssertionError((case, result.exception)) from result.exception
        _check(case, result.exit_code, result.output, root, before)


def run_in_subprocess(case: Case, base: Path) -> None:
    with tempfile.TemporaryDirectory(dir=base) as tmp:
        root = Path(tmp)
        before = _setup(case, root)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        done = subprocess.run(
            [sys.executable, "-m", "babysit", *case.args],
            cwd=root,
            capture_output=True,
            text=True,
            errors="replace",
            env=env,
            check=False,
        )
        _check(case, done.returncode, done.stdout + done.stderr, root, before)


SETTINGS = {
    "deadline": None,
    "database": None,
    "derandomize": True,  # the same cases on every run: a failure is reproducible
    "suppress_health_check": list(HealthCheck),
}


def _report(label: str, tried: dict[Case, None], capsys: pytest.CaptureFixture[str]) -> None:
    kinds: dict[str, int] = {}
    for case in tried:
        kinds[case.kind] = kinds.get(case.kind, 0) + 1
    with capsys.disabled():
        print(
            f"\ngenerated bad inputs ({label}): {len(tried)} tried, {len(tried)} answered with "
            f"exit 2 and one line; by kind: {dict(sorted(kinds.items()))}"
        )


def test_generated_bad_input_is_answered_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tried: dict[Case, None] = {}  # distinct cases, in order

    @hypothesis.settings(max_examples=420, **SETTINGS)
    @hypothesis.given(BAD_INPUT)
    def check(case: Case) -> None:
        run_in_process(case, tmp_path)
        tried[case] = None

    check()
    _report("in-process", tried, capsys)
    assert len(tried) >= 300


def _argv_safe(case: Case) -> bool:
    """Arguments a real process can take (no NUL byte, not longer than the OS allows)."""
    return all("\x00" not in a and len(a.encode()) < 100_000 for a in case.args)


@pytest.mark.slow
def test_generated_bad_input_through_real_processes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tried: dict[Case, None] = {}

    @hypothesis.settings(max_examples=20, **SETTINGS)
    @hypothesis.given(BAD_INPUT.filter(_argv_safe))
    def check(case: Case) -> None:
        run_in_subprocess(case, tmp_path)
        tried[case] = None

    check()
    _report("subprocess", tried, capsys)
    assert len(tried) >= 15
