"""A digits task whose every step sleeps ``delay`` seconds: trials long enough to kill."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import torch
from torch import nn

import babysit


class _Slow(nn.Module):
    def __init__(self, inner: nn.Module, delay: float) -> None:
        super().__init__()
        self.inner, self.delay = inner, delay

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            time.sleep(self.delay)
        return self.inner(x)


def slow_digits(delay: float = 0.05) -> babysit.Task:
    task = babysit.get_task("digits-mlp")
    factory = task.model_factory

    def slow(cfg: dict[str, Any]) -> nn.Module:
        return _Slow(factory(cfg), delay)

    return dataclasses.replace(task, model_factory=slow)
