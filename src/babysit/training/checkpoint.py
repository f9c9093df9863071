"""Checkpoints: atomic save, ``weights_only=True`` load, names that carry the val metric.

A checkpoint holds ``Trainer.state_dict()`` (which owns its layout): tensors and plain
types only, so the safe loader accepts it. Files are named as the notes suggest, with
the validation score in the name: ``epoch=007-val_acc=0.9412.pt``. The RNG states a
run depends on (torch, numpy, python, CUDA, the data order's generator) are seeded,
captured and restored here.
"""

from __future__ import annotations

import io
import os
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from babysit._io import atomic_open
from babysit.errors import CheckpointError

__all__ = [
    "CheckpointFile",
    "capture_rng",
    "checkpoint_name",
    "list_checkpoints",
    "load_checkpoint",
    "prune_checkpoints",
    "restore_rng",
    "save_checkpoint",
    "seed_everything",
]

_NAME = re.compile(r"^epoch=(\d+)-(\w+)=(-?[\d.]+(?:e[-+]?\d+)?|nan|inf|-inf)\.pt$")


@dataclass(frozen=True)
class CheckpointFile:
    path: Path
    epoch: int
    metric: str
    value: float


def checkpoint_name(epoch: int, metric: str, value: float) -> str:
    """``epoch=007-val_acc=0.9412.pt`` (the notes: put the validation score in the name)."""
    return f"epoch={epoch:03d}-{metric}={value:.4f}.pt"


def list_checkpoints(directory: str | os.PathLike[str]) -> list[CheckpointFile]:
    """The checkpoints in ``directory`` sorted by epoch (other files are ignored)."""
    found = []
    d = Path(directory)
    if not d.is_dir():
        return []
    for path in d.iterdir():
        m = _NAME.match(path.name)
        if m:
            found.append(CheckpointFile(path, int(m.group(1)), m.group(2), float(m.group(3))))
    return sorted(found, key=lambda c: c.epoch)


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> Path:
    """Write ``state`` atomically: a temp file in the same dir, fsync, then rename.

    The state is serialised in memory first, so a failed write (a full disk) is an
    OSError naming the file rather than torch's "unexpected pos" from inside its writer.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = io.BytesIO()
    torch.save(state, data)
    with atomic_open(path, "wb") as f:
        f.write(data.getbuffer())
    return path


def load_checkpoint(path: str | os.PathLike[str], map_location: str | None = "cpu") -> Any:
    """Load with ``weights_only=True``; a corrupt or foreign file raises CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many kinds for a bad file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{path}: cannot load checkpoint ({first}); the file is corrupt or not a "
            "babysit checkpoint: delete it to resume from an earlier one"
        ) from None
    if not isinstance(state, dict) or "model" not in state or "epoch" not in state:
        raise CheckpointError(f"{path}: not a babysit checkpoint (no model/epoch entries)")
    return state


def prune_checkpoints(
    directory: str | os.PathLike[str], *, keep_best: int, keep_last: int, direction: str
) -> list[Path]:
    """Delete checkpoints that are neither among the ``keep_best`` best nor ``keep_last`` last."""
    files = list_checkpoints(directory)
    last = {c.path for c in files[-keep_last:]} if keep_last else set()
    sign = -1.0 if direction == "max" else 1.0
    ranked = sorted(files, key=lambda c: (sign * c.value, c.epoch))
    best = {c.path for c in ranked[:keep_best]}
    removed = []
    for c in files:
        if c.path not in last and c.path not in best:
            c.path.unlink(missing_ok=True)
            removed.append(c.path)
    return removed


def seed_everything(seed: int) -> torch.Generator:
    """Seed torch, numpy and random; return the generator that orders the data."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)
    return torch.Generator().manual_seed(seed)


def capture_rng(generator: torch.Generator | None) -> dict[str, Any]:
    """RNG states as tensors and plain types (``weights_only=True`` accepts them)."""
    np_state = cast(tuple[Any, ...], np.random.get_state(legacy=True))
    py_version, py_state, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {"version": py_version, "state": list(py_state), "gauss": py_gauss},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if generator is not None:
        state["loader"] = generator.get_state()
    return state


def restore_rng(state: dict[str, Any], generator: torch.Generator | None) -> None:
    """Inverse of :func:`capture_rng`."""
    torch.set_rng_state(state["torch"])
    npst = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            npst["keys"].numpy().astype(np.uint32),
            npst["pos"],
            npst["has_gauss"],
            npst["cached_gaussian"],
        )
    )
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if generator is not None and "loader" in state:
        generator.set_state(state["loader"])
