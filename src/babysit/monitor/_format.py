"""Numbers in findings, written for people: short, scientific past 1e4, factors as "x2e9".

num(0.01234) -> "0.01234"     num(591628062852.1) -> "5.916e11"    num(nan) -> "nan"
times(7.1) -> "7.1x"          times(2.1e9) -> "2.1e9x"             times(0.004) -> "0.004x"
share(0.27) -> "27%"          share(5.9e33) -> "5.9e33x"
"""

from __future__ import annotations

import math

__all__ = ["num", "share", "times"]


def num(x: float | None, digits: int = 4) -> str:
    """``x`` to ``digits`` significant digits; scientific (``5.916e11``) from 1e4 or under 1e-3."""
    if x is None:
        return "?"
    x = float(x)
    if not math.isfinite(x) or x == 0:
        return str(x) if not math.isfinite(x) else "0"
    if 1e-3 <= abs(x) < 1e4:
        text = f"{x:.{digits}g}"
        return text if "e" not in text else f"{x:.0f}"
    mantissa, exponent = f"{x:.{max(digits - 1, 0)}e}".split("e")
    if "." in mantissa:
        mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exponent)}"


def times(ratio: float) -> str:
    """A factor: ``"7.1x"``, ``"2.1e9x"``."""
    return f"{num(ratio, 2)}x"


def share(ratio: float) -> str:
    """A fraction as a percentage when it reads as one (0.1 % .. 1000 %), else a factor."""
    if math.isfinite(ratio) and 1e-3 <= abs(ratio) <= 10:
        return f"{ratio:.0%}" if abs(ratio) >= 0.01 else f"{ratio:.1%}"
    return times(ratio)
