"""Reading a run dir's files as untrusted input: size, nesting and pixels capped before parsing.

A run dir may come from anywhere (a colleague, a download), so a report must not exhaust
memory or crash on what it holds. JSON: at most ``MAX_JSON_BYTES``, nested at most
``MAX_JSON_DEPTH`` levels (:mod:`babysit._io`); TOML: the same size cap; images: the
header is read first and an image of more than :data:`MAX_IMAGE_PIXELS` pixels is refused
before a byte of it is decoded (a 109 KB PNG can declare 30000 x 30000 pixels: a
decompression bomb). An optional file that cannot be used is left out: the readers
return None and put the file's name and the reason in ``skipped`` for the page to show.
"""

from __future__ import annotations

import io
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.image import imread
from PIL import Image as PILImage

from babysit._io import MAX_JSON_BYTES, read_json_file

__all__ = [
    "MAX_IMAGE_BYTES",
    "MAX_IMAGE_PIXELS",
    "hist_arrays",
    "read_image",
    "read_json",
    "read_toml",
]

MAX_IMAGE_PIXELS = 2048 * 2048  # the monitor's filter grids are a few hundred pixels a side
MAX_IMAGE_BYTES = 32 * 2**20


def read_json(path: Path, expect: type, what: str, skipped: dict[str, str]) -> Any:
    """The JSON value of ``path`` if it is an ``expect``; else None and why in ``skipped``."""
    if not path.exists():
        return None
    try:
        value = read_json_file(path)
    except UnicodeDecodeError:
        skipped[path.name] = "not valid UTF-8"
        return None
    except ValueError as exc:  # JSONDecodeError, too deep, too large
        skipped[path.name] = f"not valid JSON ({exc})"
        return None
    except OSError as exc:
        skipped[path.name] = f"cannot be read ({exc.strerror or exc})"
        return None
    if not isinstance(value, expect):
        skipped[path.name] = f"expected {what}, got a JSON {type(value).__name__}"
        return None
    return value


def read_toml(path: Path, skipped: dict[str, str]) -> dict[str, Any] | None:
    """The TOML table of ``path`` (at most MAX_JSON_BYTES); else None and why in ``skipped``."""
    if not path.exists():
        return None
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_JSON_BYTES + 1)
        if len(raw) > MAX_JSON_BYTES:
            raise ValueError(f"larger than {MAX_JSON_BYTES // 2**20} MiB")
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        skipped[path.name] = "not valid UTF-8"
    except (ValueError, RecursionError) as exc:  # TOMLDecodeError is a ValueError
        skipped[path.name] = f"not valid TOML ({exc})"
    except OSError as exc:
        skipped[path.name] = f"cannot be read ({exc.strerror or exc})"
    return None


def hist_arrays(hist: dict[str, Any]) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(edges, counts) of a histogram snapshot; (None, None) when they cannot be drawn."""
    try:
        edges = np.asarray(hist.get("edges", []), dtype=np.float64).reshape(-1)
        counts = np.asarray(hist.get("counts", []), dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):  # not lists of numbers
        return None, None
    ok = (
        edges.size == counts.size + 1
        and np.isfinite(edges).all()
        and bool((np.diff(edges) > 0).all())
        and np.isfinite(counts).all()
        and bool((counts >= 0).all())
    )
    return (edges, counts) if ok else (None, None)


def read_image(path: Path) -> np.ndarray:
    """Decode the image at ``path`` as matplotlib does, after checking its size.

    Raises ValueError when the file is larger than :data:`MAX_IMAGE_BYTES` or its header
    declares more than :data:`MAX_IMAGE_PIXELS` pixels (checked before decoding), OSError
    when it cannot be read or is not an image.
    """
    with open(path, "rb") as f:
        data = f.read(MAX_IMAGE_BYTES + 1)
    if len(data) > MAX_IMAGE_BYTES:
        raise ValueError(f"larger than {MAX_IMAGE_BYTES // 2**20} MiB")
    try:
        with PILImage.open(io.BytesIO(data)) as image:  # reads the header only
            width, height = image.size
    except PILImage.DecompressionBombError as exc:  # PIL's own cap, far above ours
        raise ValueError(
            f"more pixels than the {MAX_IMAGE_PIXELS} a report decodes ({exc})"
        ) from None
    if width * height > MAX_IMAGE_PIXELS:
        raise ValueError(
            f"{width} x {height} pixels: more pixels than the {MAX_IMAGE_PIXELS} a report decodes"
        )
    return np.asarray(imread(io.BytesIO(data)))
