"""The one registry mechanism: order, lookups, the one "unknown X" message."""

from __future__ import annotations

import pytest

from babysit._registry import Registry
from babysit.errors import ConfigError


def _colours() -> Registry[str]:
    reg: Registry[str] = Registry("colour", error=ConfigError)
    for name in ("red", "green", "blue"):
        reg.add(name, name.upper())
    return reg


def test_entries_keep_registration_order() -> None:
    reg = _colours()
    assert reg.names() == list(reg) == ["red", "green", "blue"]
    assert dict(reg) == {"red": "RED", "green": "GREEN", "blue": "BLUE"}


def test_unknown_name_raises_one_line_with_a_close_match_and_the_choices() -> None:
    with pytest.raises(ConfigError) as err:
        _colours().get_or_raise("gren", where="paint.colour")
    msg = str(err.value)
    assert "\n" not in msg
    assert (
        msg
        == "paint.colour: unknown colour 'gren'; did you mean 'green'? use one of red, green, blue"
    )


def test_getitem_uses_the_registry_error_and_get_and_in_do_not_raise() -> None:
    reg = _colours()
    with pytest.raises(ConfigError, match="unknown colour 'pink'; use one of"):
        reg["pink"]
    assert reg.get("pink") is None and "pink" not in reg and "red" in reg


def test_register_decorator_wraps_but_returns_the_function() -> None:
    reg: Registry[tuple[str, int]] = Registry("rule")

    @reg.register("double", lambda fn: ("double", fn(2)))
    def double(x: int) -> int:
        return 2 * x

    assert double(3) == 6 and reg["double"] == ("double", 4)


def test_registering_a_name_twice_is_an_error() -> None:
    reg = _colours()
    with pytest.raises(ValueError, match="registered twice"):
        reg.add("red", "x")


def test_register_without_wrap_stores_the_function() -> None:
    reg: Registry[object] = Registry("hook")

    @reg.register("h")
    def hook() -> int:
        return 1

    assert reg["h"] is hook
