"""The TensorBoard sink, read back with tensorboard's own event reader."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from babysit.monitor.log import read_metrics
from babysit.monitor.watch import watch

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


def test_scalars_histograms_and_filters_read_back(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 6), nn.ReLU(), nn.Linear(6, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = torch.randn(8, 1, 4, 4), torch.randint(0, 3, (8,))
    with watch(
        model, opt, log_dir=tmp_path, tensorboard=True, every=2, hist_every=2, window=8
    ) as mon:
        for _ in range(4):
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            mon.step(loss)
        mon.log_epoch(val_acc=0.25)
        mon.event("checkpoint", path="epoch=001.pt")
    records = list(read_metrics(tmp_path / "metrics.jsonl"))

    acc = event_accumulator.EventAccumulator(
        str(tmp_path / "tensorboard"),
        size_guidance={"scalars": 0, "histograms": 0, "images": 0, "tensors": 0},
    )
    acc.Reload()
    losses = [(r["step"], r["loss"]) for r in records if r["kind"] == "batch"]
    scalars = [(e.step, e.value) for e in acc.Scalars("batch/loss")]
    assert [s for s, _ in scalars] == [s for s, _ in losses]
    assert [v for _, v in scalars] == pytest.approx([v for _, v in losses], rel=1e-6)
    assert [e.value for e in acc.Scalars("batch/mu")] == pytest.approx([0.9] * 4)
    assert [(e.step, e.value) for e in acc.Scalars("epoch/val_acc")] == [(4, 0.25)]

    ratios = [r for r in records if r.get("name") == "update_ratio"]
    assert [e.value for e in acc.Scalars("update_ratio/1.weight")] == pytest.approx(
        [r["values"]["1.weight"] for r in ratios], rel=1e-6
    )
    hists = [r for r in records if r.get("name") == "act_hist"]
    read = acc.Histograms("act_hist/2")
    assert [h.step for h in read] == [r["step"] for r in hists]
    for event, record in zip(read, hists, strict=True):
        assert list(event.histogram_value.bucket) == record["values"]["2"]["counts"]
        assert list(event.histogram_value.bucket_limit) == pytest.approx(
            record["values"]["2"]["edges"][1:]
        )
        assert event.histogram_value.num == sum(record["values"]["2"]["counts"])
    stats = [r for r in records if r.get("name") == "act_stats"]
    assert [e.value for e in acc.Scalars("act_stats/2/dead")] == pytest.approx(
        [r["values"]["2"]["dead"] for r in stats]
    )
    images = acc.Images("filters")  # dense first layer on (1, 4, 4) inputs: 6 filters
    assert images and images[0].width >= 256
