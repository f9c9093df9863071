"""Shared fixtures: small, fast configs on the bundled digits task."""

from __future__ import annotations

import os
from typing import Any

import pytest
import torch

# two cores shared by two xdist workers: one thread each is faster and deterministic
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture
def tiny_config() -> dict[str, Any]:
    """digits-mlp for 3 short epochs: enough to learn, fast enough for every test."""
    return {
        "task": {"name": "digits-mlp"},
        "model": {"hidden": [32]},
        "optim": {"rule": "adam", "lr": 3e-3},
        "train": {"epochs": 3, "batch_size": 64, "reg": 1e-4, "seed": 0, "report": False},
    }


@pytest.fixture(scope="session")
def fast_demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, int, str]:
    """``babysit demo --fast`` run once through the CLI: (demo dir, exit code, output)."""
    from typer.testing import CliRunner

    from babysit.cli import app

    out = tmp_path_factory.mktemp("fast-demo") / "demo"
    result = CliRunner().invoke(app, ["demo", "--fast", "--out", str(out)])
    return out, result.exit_code, result.output
