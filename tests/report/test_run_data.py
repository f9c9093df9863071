"""Reading a run dir: steps mapped to epochs when the loop did not say how long an epoch is."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from babysit.monitor.watch import watch
from babysit.report._run_data import load_run

STEPS, EPOCHS = 10, 3


def _watched_loop(run: Path, steps_per_epoch: int | None) -> Path:
    """A real watched loop of 3 epochs x 10 steps, epochs logged at their ends."""
    torch.manual_seed(0)
    x, y = torch.randn(100, 6), torch.randint(0, 3, (100,))
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with watch(model, opt, log_dir=run, every=4, steps_per_epoch=steps_per_epoch) as mon:
        for _ in range(EPOCHS):
            for idx in torch.arange(100).split(STEPS):
                loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                mon.step(loss)
            mon.log_epoch(val_loss=loss.item())
    return run


def test_without_steps_per_epoch_the_first_epoch_is_spread_over_0_to_1(tmp_path: Path) -> None:
    data = load_run(_watched_loop(tmp_path / "run", steps_per_epoch=None))
    steps = np.arange(1, STEPS * EPOCHS + 1)
    assert data.unit == "epoch"
    # the first epoch's batch records carry no epoch: the first log_epoch says 10 steps
    np.testing.assert_allclose(data.batch["loss"].x, steps / STEPS)
    np.testing.assert_allclose(data.epochs["val_loss"].x, [1, 2, 3])
    for layers in data.scalars["update_ratio"].values():  # probes of the first epoch too
        assert layers.x.min() < 1


def test_it_reads_as_the_same_loop_watched_with_steps_per_epoch(tmp_path: Path) -> None:
    inferred = load_run(_watched_loop(tmp_path / "inferred", steps_per_epoch=None))
    told = load_run(_watched_loop(tmp_path / "told", steps_per_epoch=STEPS))
    np.testing.assert_allclose(inferred.batch["loss"].x, told.batch["loss"].x)
    np.testing.assert_allclose(inferred.epochs["val_loss"].x, told.epochs["val_loss"].x)
    for name, series in told.scalars["update_ratio"].items():
        np.testing.assert_allclose(inferred.scalars["update_ratio"][name].x, series.x)


def test_a_log_with_no_watch_event_maps_its_first_epoch_from_its_epoch_record(
    tmp_path: Path,
) -> None:
    records = [{"kind": "batch", "step": s, "loss": 1.0} for s in range(1, 5)]
    records.append({"kind": "epoch", "epoch": 1, "step": 4, "val_acc": 0.5})
    records += [{"kind": "batch", "step": s, "epoch": s / 4, "loss": 1.0} for s in range(5, 9)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    data = load_run(tmp_path)
    np.testing.assert_allclose(data.batch["loss"].x, np.arange(1, 9) / 4)
    np.testing.assert_allclose(data.epochs["val_acc"].x, [1.0])


def test_a_monitor_told_the_epoch_length_is_not_second_guessed(tmp_path: Path) -> None:
    """Epoch records every 5 steps of a 10-step epoch (the user's choice) move nothing."""
    records: list[dict[str, object]] = [
        {"kind": "event", "step": 0, "what": "watch", "steps_per_epoch": 10}
    ]
    records += [{"kind": "batch", "step": s, "epoch": s / 10, "loss": 1.0} for s in range(1, 11)]
    records.insert(6, {"kind": "epoch", "epoch": 1, "step": 5, "val_acc": 0.5})
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    data = load_run(tmp_path)
    np.testing.assert_allclose(data.batch["loss"].x, np.arange(1, 11) / 10)
    np.testing.assert_allclose(data.epochs["val_acc"].x, [0.5])
