"""metrics.jsonl: strict JSON lines, NaN/inf as strings that read back as floats."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from babysit.monitor.log import (
    BATCH_VALUES,
    MAX_LINE_BYTES,
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


# issue 13, defects 5 and 7: a line that is no record; (bytes, reason handed to on_bad)
BAD_LINES = [
    (b'{"kind": "batch", "step": 2, "x": "\xff"}\n', "not valid UTF-8"),
    (b"[1, 2]\n", "a JSON array, not an object"),
    (b'"text"\n', "a JSON string, not an object"),
    (b"null\n", "a JSON null, not an object"),
    (b"{oops\n", "not valid JSON"),
    (b"[" * 100_000 + b"]" * 100_000 + b"\n", "nested deeper than 64 levels"),
    (b'{"kind": "event", "s": "' + b"x" * (MAX_LINE_BYTES + 10) + b'"}\n', "longer than 8 MiB"),
]


@pytest.mark.parametrize(("line", "reason"), BAD_LINES, ids=[r for _, r in BAD_LINES])
def test_a_line_that_is_no_record_is_skipped_and_reported(
    tmp_path: Path, line: bytes, reason: str
) -> None:
    path = tmp_path / "metrics.jsonl"
    good = b'{"kind": "batch", "step": 1, "loss": 1.0}\n'
    path.write_bytes(good + line + good.replace(b"1,", b"3,"))
    bad: list[tuple[int, str]] = []
    records = list(read_metrics(path, on_bad=lambda n, why: bad.append((n, why))))
    assert [r["step"] for r in records] == [1, 3]
    assert len(bad) == 1 and bad[0][0] == 2 and reason in bad[0][1], bad


def test_a_torn_last_line_is_skipped_without_a_word(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b'{"kind": "batch", "step": 1, "loss": 1.0}\n{"kind": "batch", "st')
    bad: list[tuple[int, str]] = []
    assert [r["step"] for r in read_metrics(path, on_bad=lambda *a: bad.append(a))] == [1]
    assert bad == []  # a live (or killed) run's partly written line is no damage
