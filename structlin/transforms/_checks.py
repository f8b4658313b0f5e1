"""Input checks shared by the transforms: clear errors, and the dtype a transform computes in."""

from __future__ import annotations

import torch

_COMPUTED = (torch.float32, torch.float64)
_UPCAST = (torch.float16, torch.bfloat16)


def as_computable(x, name: str) -> torch.Tensor:
    """Check that ``x`` is a floating tensor with a non-empty last dimension; return it in the dtype the
    transform computes in (float16/bfloat16 are computed in float32, float32/float64 as they are)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} expects a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in _COMPUTED + _UPCAST:
        raise TypeError(
            f"{name} expects a real floating-point tensor (float16, bfloat16, float32 or float64), got {x.dtype}"
        )
    if x.dim() == 0:
        raise ValueError(f"{name} transforms the last dimension and needs a tensor with at least 1 dimension, got a 0-d tensor")
    if x.shape[-1] == 0:
        raise ValueError(f"{name} needs a last dimension of length >= 1, got shape {tuple(x.shape)}")
    return x.float() if x.dtype in _UPCAST else x


def in_dtype_of(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``y`` in ``x``'s dtype: the result of a transform computed in float32 for a float16/bfloat16 ``x``."""
    return y if y.dtype == x.dtype else y.to(x.dtype)


def check_power_of_two(n: int, name: str) -> None:
    """Raise a ``ValueError`` naming ``n`` and the nearest powers of two unless ``n`` is one."""
    if n >= 1 and n & (n - 1) == 0:
        return
    below = 1 << (n.bit_length() - 1)
    above = below << 1
    raise ValueError(
        f"{name} needs the last dimension to be a power of two, got length {n}; "
        f"the nearest valid lengths are {below} and {above} (zero-pad the input to {above})"
    )
