"""Numbers in findings are written for people (issue 12, defect 11)."""

from __future__ import annotations

import math

import pytest

from babysit.monitor._format import num, share, times


@pytest.mark.parametrize(
    ("x", "text"),
    [
        (2.302585, "2.303"),
        (0.01234, "0.01234"),
        (1234.5, "1234"),
        (12345.0, "1.234e4"),
        (591628062852120140331222007021568.0, "5.916e32"),
        (4.6e-12, "4.6e-12"),
        (0.0, "0"),
        (math.nan, "nan"),
        (math.inf, "inf"),
    ],
)
def test_num_is_short_and_scientific_past_1e4(x: float, text: str) -> None:
    assert num(x) == text


def test_factors_and_shares_never_print_a_30_digit_percentage() -> None:
    assert times(2.1e9) == "2.1e9x" and times(7.14) == "7.1x"
    assert share(0.27) == "27%" and share(0.004) == "0.4%"
    exploded = share(5.916e32)  # an exploded loss over the chance loss
    assert exploded == "5.9e32x" and "%" not in exploded
