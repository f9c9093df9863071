"""metrics.jsonl: strict JSON lines, NaN/inf as strings that read back as floats."""

from __future__ import annotations

import json
import math
from pathlib import Path

from babysit.monitor.log import (
    BATCH_VALUES,
    MetricsWriter,
    batch_record,
    epoch_record,
    event_record,
    measurements,
    probe_record,
    read_metrics,
)


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


def test_record_constructors_write_the_documented_fields_in_order() -> None:
    # DESIGN.md "Files a user or a script reads": the batch fields, in this order
    assert BATCH_VALUES == ("loss", "data_loss", "reg_loss", "lr", "mu")
    batch = batch_record(3, 2.5, epoch=0.75, data_loss=2.0, reg_loss=0.5, lr=0.1, mu=0.9)
    assert json.dumps(batch) == (
        '{"kind": "batch", "step": 3, "epoch": 0.75, "loss": 2.5, "data_loss": 2.0,'
        ' "reg_loss": 0.5, "lr": 0.1, "mu": 0.9}'
    )
    assert list(batch_record(1, 2.3)) == ["kind", "step", "loss"]  # no epoch until it is known
    epoch = epoch_record(2, 8, train_loss=1.0, val_acc=0.5)
    assert list(epoch.items()) == [
        ("kind", "epoch"),
        ("epoch", 2),
        ("step", 8),
        ("train_loss", 1.0),
        ("val_acc", 0.5),
    ]
    probe = probe_record(4, "grad_norm", {"fc1": 0.1}, epoch=1.0)
    assert list(probe) == ["kind", "step", "epoch", "name", "values"]
    event = event_record(5, "checkpoint", path="epoch=001.pt")
    assert event == {"kind": "event", "step": 5, "what": "checkpoint", "path": "epoch=001.pt"}
    assert dict(measurements(batch)) == {k: v for k, v in batch.items() if k in BATCH_VALUES}
