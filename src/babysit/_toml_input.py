"""A config file read as untrusted input: capped, UTF-8, not empty, TOML, shallow.

``babysit train /dev/zero`` would otherwise read until memory runs out, and a 50,000-deep
TOML array is a RecursionError inside tomllib; each is one ConfigError naming the file
(and the key, where one can be found). This module does not import torch.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from babysit.errors import ConfigError

__all__ = ["MAX_CONFIG_BYTES", "MAX_DEPTH", "TOO_DEEP", "check_depth", "read_toml"]

MAX_CONFIG_BYTES = 1 << 20  # a config is a few hundred bytes; /dev/zero is not one
MAX_DEPTH = 32  # tables and arrays in tables: deeper is an attack, not a config
TOO_DEEP = f"is nested more than {MAX_DEPTH} levels deep; a config's values are flat lists"


def read_toml(path: Path, name: str) -> dict[str, Any]:
    """A config file read as untrusted: at most MAX_CONFIG_BYTES, UTF-8 (a BOM is dropped),
    not empty, TOML; ConfigError naming the file otherwise."""
    try:
        if path.is_dir():
            raise ConfigError(f"{name}: is a directory, expected a .toml config file")
        with path.open("rb") as fh:  # a device or a pipe is read up to the cap, not to the end
            raw = fh.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(
            f"{name}: config file not found (give the path to a .toml file)"
        ) from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise ConfigError(f"{name}: cannot read the file: {reason}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"{name}: is larger than {MAX_CONFIG_BYTES >> 10} KiB; a config is a small TOML file"
        )
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{name}: is not UTF-8 text (byte {exc.start} is {raw[exc.start : exc.start + 1]!r}); "
            "save the config as UTF-8"
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{name}: TOML syntax error: {exc}") from None
    except RecursionError:  # tomllib recurses per nested array or inline table
        raise ConfigError(f"{name}: {_deep_key(text)} {TOO_DEEP}") from None
    if not data:
        raise ConfigError(f"{name}: holds no settings; a config names at least [task] name")
    return data


def _deep_key(text: str) -> str:
    """The dotted key whose value opens more than MAX_DEPTH brackets (for a RecursionError)."""
    table = ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("[") and not stripped.startswith("[["):
            table = stripped.strip("[] ")
        key, eq, value = stripped.partition("=")
        if eq and _nesting(value) > MAX_DEPTH:
            return ".".join(p for p in (table, key.strip()) if p)
    return "a value"


def _nesting(text: str) -> int:
    """How deep brackets and braces nest in ``text`` (quotes are not told apart: an upper
    bound, which is all that naming the key of an already refused value needs)."""
    depth = deepest = 0
    for char in text:
        if char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def check_depth(data: Mapping[str, Any], name: str) -> None:
    """ConfigError naming the first key whose value nests deeper than MAX_DEPTH (iterative:
    a deep value never meets Python's recursion limit, and a cycle is cut at the limit)."""
    stack: list[tuple[str, Any, int]] = [(str(k), v, 1) for k, v in data.items()]
    while stack:
        key, value, depth = stack.pop()
        if depth > MAX_DEPTH:
            top = key.split("[")[0].split(".")
            raise ConfigError(f"{name}: {'.'.join(top[:2])} {TOO_DEEP}")
        if isinstance(value, Mapping):
            stack.extend((f"{key}.{k}", v, depth + 1) for k, v in value.items())
        elif isinstance(value, list | tuple):
            stack.extend((f"{key}[{i}]", v, depth + 1) for i, v in enumerate(value))
