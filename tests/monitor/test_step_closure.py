"""optimizer.step(closure) (Lightning, LBFGS): the gradients appear inside the step.

The update probe reads ``.grad`` after the closure ran, so every tensor gets its update ratio
(none is called frozen), and the carry-over of the last step's gradient is read as well.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from babysit.monitor.probes import GRAD_CARRYOVER, UPDATE_RATIO
from babysit.monitor.watch import watch


def _fit(tmp_path: Path, *, zero_grad: bool) -> tuple[dict[str, list[dict[str, float]]], list[str]]:
    torch.manual_seed(0)
    x, y = torch.randn(256, 8), torch.randint(0, 3, (256,))
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    readings: dict[str, list[dict[str, float]]] = {UPDATE_RATIO: [], GRAD_CARRYOVER: []}
    with watch(model, opt, log_dir=tmp_path, every=5) as mon:
        for step in range(40):
            rows = slice(32 * (step % 8), 32 * (step % 8 + 1))

            def closure(rows: slice = rows) -> torch.Tensor:
                if zero_grad:
                    opt.zero_grad()
                loss = F.cross_entropy(model(x[rows]), y[rows])
                loss.backward()
                return loss

            loss = opt.step(closure)
            mon.step(loss)
        for name, history in mon.metrics.probes.items():
            if name in readings:
                readings[name] = [values for _, values in [history.first, *history.latest]]
        codes = [f.code for f in mon.findings()]
    return readings, codes


def test_closure_steps_give_every_tensor_its_update_ratio(tmp_path: Path) -> None:
    readings, codes = _fit(tmp_path, zero_grad=True)
    assert readings[UPDATE_RATIO]
    assert all(set(r) == {"0.weight", "2.weight"} for r in readings[UPDATE_RATIO])
    assert all(0 < v < 1 for r in readings[UPDATE_RATIO] for v in r.values())
    assert "frozen_parameters" not in codes
    assert readings[GRAD_CARRYOVER]
    assert all(v == 0 for r in readings[GRAD_CARRYOVER] for v in r.values())


def test_a_closure_that_never_zeroes_is_caught(tmp_path: Path) -> None:
    readings, codes = _fit(tmp_path, zero_grad=False)
    assert all(v == pytest.approx(1.0) for r in readings[GRAD_CARRYOVER] for v in r.values())
    assert "grads_not_zeroed" in codes
