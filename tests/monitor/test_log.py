"""metrics.jsonl: strict JSON lines, NaN/inf as strings that read back as floats."""

from __future__ import annotations

import json
import math
from pathlib import Path

from babysit.monitor.log import MetricsWriter, read_metrics


def test_records_are_strict_json_and_non_finite_values_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    with MetricsWriter(path) as writer:
        writer.write({"kind": "batch", "step": 1, "loss": 2.5})
        writer.write(
            {"kind": "batch", "step": 2, "loss": math.nan, "extra": {"g": [math.inf, 1.0]}}
        )

    def strict(token: str) -> None:
        raise AssertionError(f"not strict JSON: {token}")

    lines = [json.loads(line, parse_constant=strict) for line in path.read_text().splitlines()]
    assert lines[0] == {"kind": "batch", "step": 1, "loss": 2.5}
    assert lines[1]["loss"] == "nan" and lines[1]["extra"] == {"g": ["inf", 1.0]}
    first, second = read_metrics(path)
    assert first["loss"] == 2.5
    assert math.isnan(second["loss"]) and second["extra"]["g"] == [math.inf, 1.0]
