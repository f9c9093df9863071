"""A digits task whose training steps wait while a gate file is missing: a run to kill at will."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

import babysit


class _Gated(nn.Module):
    def __init__(self, inner: nn.Module, gate: Path) -> None:
        super().__init__()
        self.inner, self.gate = inner, gate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and not self.gate.exists():
            self.gate.with_suffix(".waiting").touch()  # tells the test: training has begun
            while not self.gate.exists():
                time.sleep(0.01)
        return self.inner(x)


def gated_digits(gate: str) -> babysit.Task:
    """digits-mlp whose every training step waits until the file ``gate`` exists.

    The first step to wait touches ``gate`` with the suffix ``.waiting``.
    """
    task = babysit.get_task("digits-mlp")
    factory = task.model_factory

    def gated(cfg: dict[str, Any]) -> nn.Module:
        return _Gated(factory(cfg), Path(gate))

    return dataclasses.replace(task, model_factory=gated)
