"""First-layer filters as an image grid (the notes' "first-layer visualizations").

Conv filters (O, C, kh, kw) are drawn as they are; rows of a Linear layer (O, in) are drawn
when the input is an image, i.e. ``in == prod(image_shape)`` for an (H, W) or (C, H, W) shape.
Each filter is scaled to [0, 1] on its own; 3 channels are drawn in colour, others averaged
to grey. At most ``max_filters`` filters, in a near-square grid with a 1-pixel border.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

__all__ = ["filter_grid", "save_filters"]


def filter_grid(
    weight: torch.Tensor, image_shape: Sequence[int] | None, *, max_filters: int = 64
) -> np.ndarray | None:
    """A uint8 image (H, W) or (H, W, 3) of the filters in ``weight``; None if not images."""
    w = weight.detach().float().cpu()
    if w.ndim == 2 and image_shape is not None and math.prod(image_shape) == w.shape[1]:
        shape = tuple(image_shape) if len(image_shape) == 3 else (1, *image_shape)
        w = w.reshape(w.shape[0], *shape)  # (O, C, H, W)
    if w.ndim != 4:
        return None
    w = w[:max_filters]
    if w.shape[1] != 3:
        w = w.mean(dim=1, keepdim=True)
    lo = w.amin(dim=(1, 2, 3), keepdim=True)
    hi = w.amax(dim=(1, 2, 3), keepdim=True)
    w = (w - lo) / (hi - lo).clamp_min(1e-12)  # each filter to [0, 1]
    n, c, h, wd = w.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = torch.full((c, rows * (h + 1) + 1, cols * (wd + 1) + 1), 0.5)  # grey border
    for i in range(n):
        r, k = divmod(i, cols)
        grid[:, 1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + k * (wd + 1) : 1 + k * (wd + 1) + wd] = (
            w[i]
        )
    image = (grid * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()  # (H, W, C)
    return image[:, :, 0] if c == 1 else image


def save_filters(
    layer: nn.Module, image_shape: Sequence[int] | None, path: Path, *, min_size: int = 256
) -> bool:
    """Write the filter grid of ``layer`` to a PNG at ``path``; False if it has no image filters.

    Small grids are enlarged (nearest neighbour) to at least ``min_size`` pixels across.
    """
    weight = getattr(layer, "weight", None)
    if not isinstance(weight, torch.Tensor):
        return False
    image = filter_grid(weight, image_shape)
    if image is None:
        return False
    from PIL import Image  # matplotlib's own dependency: always there

    scale = max(1, math.ceil(min_size / image.shape[1]))
    image = image.repeat(scale, axis=0).repeat(scale, axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return True
