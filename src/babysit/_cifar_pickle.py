"""The restricted unpickler of CIFAR-10's python batches: numpy arrays, nothing else.

A batch file is a pickle, and a pickle can call anything it names; this one resolves only
the numpy names a real batch uses, and each allocates no more than the file's own bytes:
``numpy.ndarray`` is a name for ``_reconstruct``, never a constructor (``ndarray((10**13,))``
would ask for 10 TB before any check), ``_reconstruct`` builds only the empty array that
``__setstate__`` fills from the file (numpy checks the data's length against the shape),
and no object dtype (an object array allocates its whole shape before reading it).
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Callable
from typing import Any, cast

import numpy as np

__all__ = ["CifarUnpickler", "Refused"]


def _latin1_encode(text: str, encoding: str) -> bytes:
    """``_codecs.encode`` as Python 3 protocol-2 pickles use it for bytes, latin-1 only."""
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r}")
    return text.encode("latin-1")


# numpy's array and scalar rebuild functions, wherever this numpy keeps them (numpy 2 moved them)
_reconstruct = cast(tuple[Callable[..., Any], ...], np.zeros(0).__reduce__())[0]
_scalar = cast(tuple[Callable[..., Any], ...], np.int64(0).__reduce__())[0]


class _NDArrayName:
    """What ``numpy.ndarray`` resolves to in a batch pickle: a name for ``_reconstruct``,
    never a constructor (``ndarray((10**13,))`` would allocate 10 TB before any check)."""

    __slots__ = ()


_NDARRAY = _NDArrayName()


def _checked_reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    """numpy's ``_reconstruct`` for the empty array a pickle then fills from its own bytes.

    A real batch asks for shape (0,) and ``__setstate__`` brings the data (whose length
    numpy checks against the shape); a larger shape here would be allocated unread.
    """
    if subtype is not _NDARRAY or not isinstance(shape, tuple) or math.prod(shape) != 0:
        raise pickle.UnpicklingError(f"an array rebuilt with shape {shape!r}")
    return cast(np.ndarray, _reconstruct(np.ndarray, shape, dtype))


def _checked_dtype(*args: Any) -> np.dtype[Any]:
    """numpy.dtype, but no object dtype: an object array's ``__setstate__`` allocates its
    whole shape before it reads a single element."""
    dtype = np.dtype(*args)
    if dtype.hasobject:
        raise pickle.UnpicklingError("an object array")
    return dtype


# Everything a CIFAR-10 batch pickle refers to, under numpy 1 and numpy 2 module names; each
# allocates no more than the bytes the file holds.
_CIFAR_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _checked_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _checked_reconstruct,
    ("numpy.core.multiarray", "scalar"): _scalar,
    ("numpy._core.multiarray", "scalar"): _scalar,
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _checked_dtype,
    ("_codecs", "encode"): _latin1_encode,
}


class Refused(pickle.UnpicklingError):
    """A pickle named a global outside ``_CIFAR_GLOBALS``; ``args[0]`` is "module.name"."""


class CifarUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the numpy globals of CIFAR-10 batches; no imports."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _CIFAR_GLOBALS[(module, name)]
        except KeyError:
            raise Refused(f"{module}.{name}") from None
