"""Input and argument checks shared by the layers of this package."""

from __future__ import annotations

import torch

__all__ = ["check_compute_dtype", "check_rank"]

_HALF = (torch.float16, torch.bfloat16)


def check_compute_dtype(layer: torch.nn.Module, x: torch.Tensor, compute: torch.dtype, device: torch.device) -> None:
    """Inputs must have the parameters' dtype (or be float16/bfloat16 with float32 parameters) and device."""
    name = type(layer).__name__
    if x.dtype != compute and not (x.dtype in _HALF and compute == torch.float32):
        raise TypeError(f"{name} with {compute} parameters expects {compute} inputs (or float16/bfloat16), got {x.dtype}")
    if x.device != device:
        raise ValueError(f"{name}'s parameters are on {device}, so inputs must be too; got {x.device}")


def check_rank(rank, what: str = "rank") -> int:
    """``rank`` as a positive int, or a ``ValueError`` naming ``what``."""
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"{what} must be a positive int, got {rank!r}")
    return rank
