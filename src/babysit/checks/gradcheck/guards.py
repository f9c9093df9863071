"""What a gradient check refuses before it runs, and the user-code errors it explains.

Each refusal is a :class:`~babysit.errors.DataError` of one line (the CLI prints it with exit
code 2): an empty batch, complex or non-finite data or parameters, nothing trainable.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from babysit.errors import DataError

__all__ = [
    "LossDtypeError",
    "batchnorm_in_train",
    "check_data",
    "check_model",
    "explain",
    "float32_inside",
]


class LossDtypeError(Exception):
    """The loss comes out in another dtype than the check's (a cast inside forward): the check
    runs again in that dtype, with its scale (caught inside ``gradcheck``, never shown)."""

    def __init__(self, dtype: torch.dtype) -> None:
        super().__init__(f"the loss comes out in {str(dtype).removeprefix('torch.')}")
        self.dtype = dtype


def _bad_values(t: Tensor) -> int:
    return int((~t.isfinite()).sum()) if t.is_floating_point() else 0


def check_data(inputs: object, targets: object, where: str = "gradcheck") -> None:
    """Refuse an empty batch, complex data and non-finite values (as ``sanity`` does)."""
    for name, t in (("inputs", inputs), ("targets", targets)):
        if not isinstance(t, Tensor):
            raise DataError(f"{where}: {name} is a {type(t).__name__}; pass a tensor")
        if t.is_complex():
            raise DataError(
                f"{where}: {name} are complex ({t.dtype}); babysit checks real gradients only"
            )
        if name == "inputs" and (t.ndim == 0 or len(t) == 0):
            raise DataError(f"{where}: the batch is empty (inputs of shape {tuple(t.shape)})")
        if bad := _bad_values(t):
            raise DataError(
                f"{where}: the {name} hold {bad} non-finite values (nan/inf); fix: clean or "
                "impute the data (gradients of NaN cannot be checked)"
            )


def check_model(model: nn.Module, wrt: str, where: str = "gradcheck") -> None:
    """Refuse complex parameters, and a params check with nothing trainable. (Non-finite
    parameters make non-finite gradients, which fail with their own message.)"""
    named = list(model.named_parameters())
    for name, p in named:
        if p.is_complex():
            raise DataError(
                f"{where}: parameter {name} is complex ({p.dtype}); babysit checks real "
                "parameters only (a complex one would lose its imaginary part)"
            )
    if wrt == "params" and not any(p.requires_grad for _, p in named):
        why = "has no parameters" if not named else "has every parameter frozen"
        raise DataError(
            f"{where}: the model {why} (requires_grad=False): no gradient to check; "
            "use wrt='inputs' to check the gradient w.r.t. the data"
        )


def batchnorm_in_train(model: nn.Module) -> bool:
    return any(
        isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training for m in model.modules()
    )


def float32_inside(exc: BaseException) -> bool:
    """Whether an error of the float64 check says the model computes in float32 inside
    ``forward``: a dtype clash, or a loss that comes out in float32."""
    if isinstance(exc, LossDtypeError):
        return exc.dtype == torch.float32
    text = str(exc)
    return isinstance(exc, RuntimeError) and (
        "dtype" in text or "scalar type" in text or ("Double" in text and "Float" in text)
    )


def explain(exc: BaseException, datapoints: int) -> DataError | None:
    """One clear line for a known failure of the user's model under the check, else None."""
    if isinstance(exc, ValueError) and "Expected more than 1 value per channel" in str(exc):
        return DataError(
            f"gradcheck: BatchNorm in train mode needs more than one value per channel, and "
            f"{datapoints} datapoint(s) give one ({exc}); use datapoints >= 2"
        )
    return None
