"""The probe registry: what each probe declares, and a new probe reaching every reader."""

from __future__ import annotations

from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, get_args

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from babysit.monitor._capture import Capture
from babysit.monitor._stats import ActivationStats, to_python
from babysit.monitor.log import read_metrics
from babysit.monitor.probes import PROBES, ProbeKind, probe
from babysit.monitor.watch import watch
from babysit.report._probe_sections import PROBE_SECTIONS
from babysit.report.html import write_report


def test_probes_are_registered_in_page_order_with_their_kind_and_cadence() -> None:
    assert {n: (p.kind, p.cadence, p.fn is not None) for n, p in PROBES.items()} == {
        "update_ratio": ("per_layer_scalar", "every", False),  # the optimizer's step hooks
        "update_ratio_1d": ("per_layer_scalar", "every", False),
        "weight_norm": ("per_layer_scalar", "every", False),  # the same step hooks
        "grad_carryover": ("per_layer_scalar", "every", False),  # a hook on each parameter
        "act_stats": ("per_layer_stats", "every", True),
        "grad_norm": ("per_layer_scalar", "every", True),
        "act_hist": ("histogram", "hist", True),
        "grad_hist": ("histogram", "hist", True),
        "filters": ("image", "hist", False),  # saved by the windows with histograms
    }


def test_update_ratio_shows_the_notes_band_around_1e3() -> None:
    spec = PROBES["update_ratio"]
    assert spec.target == 1e-3 and spec.band == pytest.approx((1e-4, 1e-2)) and spec.log_y
    assert PROBES["update_ratio_1d"].anchor == "update_ratio"  # one figure with the weights


def test_act_stats_declares_the_statistics_the_accumulator_gives() -> None:
    stats = ActivationStats("relu")
    stats.add(torch.rand(4, 3))
    tensors = stats.tensors()
    summary = stats.summary(dict(zip(tensors, to_python(list(tensors.values())), strict=True)))
    assert [s.key for s in PROBES["act_stats"].stats] == list(summary)


def test_every_kind_of_probe_has_a_report_section() -> None:
    assert set(PROBE_SECTIONS) == set(get_args(ProbeKind))


class _Sections(HTMLParser):
    """Section ids and titles, and figure ids, of a report page."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.sections: list[str] = []
        self.figures: list[str] = []
        self.titles: list[str] = []
        self._in_h2 = False
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "section":
            self.sections.append(str(a["id"]))
        self._in_h2 = tag == "h2"
        if tag == "figure":
            self.figures.append(str(a["id"]).removeprefix("fig-"))

    def handle_data(self, data: str) -> None:
        if self._in_h2:
            self.titles.append(data)
            self._in_h2 = False


@pytest.fixture
def rows_probe() -> Iterator[str]:
    """A throwaway scalar probe (samples per capture window), unregistered after the test."""

    @probe("test_rows", "per_layer_scalar", "Samples per window", label="samples")
    def rows(capture: Capture, bins: int) -> dict[str, Any]:
        return {"model": float(capture.rows)}

    yield "test_rows"
    PROBES.remove("test_rows")


def test_a_new_scalar_probe_reaches_the_log_the_report_and_tensorboard(
    tmp_path: Path, rows_probe: str
) -> None:
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(4, 6), torch.randint(0, 3, (4,))
    with watch(model, opt, log_dir=tmp_path, tensorboard=True, every=2, window=8) as mon:
        for _ in range(6):
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            mon.step(loss)
        mon.log_epoch(val_acc=0.5)
    records = [r for r in read_metrics(tmp_path / "metrics.jsonl") if r.get("name") == rows_probe]
    rows = [r["values"]["model"] for r in records]
    assert rows[0] == 4.0 and all(n % 4 == 0 for n in rows)  # whole minibatches of 4 rows

    acc = accumulator.EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    logged = [(e.step, e.value) for e in acc.Scalars(f"{rows_probe}/model")]
    assert logged == [(r["step"], n) for r, n in zip(records, rows, strict=True)]

    page = _Sections(write_report(tmp_path).read_text(encoding="utf-8"))
    at = page.sections.index(rows_probe)
    assert page.titles[at] == "Samples per window"
    assert page.sections[at - 1] == "filters" and page.sections[at + 1] == "gradcheck"
    assert rows_probe in page.figures and (tmp_path / "plots" / f"{rows_probe}.png").is_file()
