"""Input, argument and state checks shared by the layers of this package."""

from __future__ import annotations

import torch

__all__ = ["SUPPORTED_DTYPES", "check_compute_dtype", "check_layer_dtype", "check_permutations", "check_rank",
           "compute_dtype"]

_HALF = (torch.float16, torch.bfloat16)

#: The parameter dtypes a layer may be built with (or cast to).
SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_layer_dtype(owner: str, dtype: torch.dtype | None) -> None:
    """``dtype`` (``None`` is torch's default) must be one of :data:`SUPPORTED_DTYPES`, or a ``TypeError``."""
    if dtype is not None and dtype not in SUPPORTED_DTYPES:
        names = ", ".join(str(d).removeprefix("torch.") for d in SUPPORTED_DTYPES)
        raise TypeError(f"{owner} supports the dtypes {names}; got dtype={dtype}")


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype a layer with ``dtype`` parameters computes in: float32 for float16/bfloat16 (their FFTs and
    unnormalised transforms overflow or are missing), else ``dtype`` itself."""
    return torch.float32 if dtype in _HALF else dtype


def check_compute_dtype(
    layer: torch.nn.Module,
    x: torch.Tensor,
    params: torch.dtype,
    device: torch.device,
    compute: torch.dtype | None = None,
) -> None:
    """Inputs must have the parameters' dtype ``params`` (or be float16/bfloat16 when the layer computes in
    float32: ``compute``, ``params`` by default) and the parameters' device."""
    name = type(layer).__name__
    compute = params if compute is None else compute
    if x.dtype != params and not (x.dtype in _HALF and compute == torch.float32):
        raise TypeError(f"{name} with {params} parameters expects {params} inputs (or float16/bfloat16), got {x.dtype}")
    if x.device != device:
        raise ValueError(f"{name}'s parameters are on {device}, so inputs must be too; got {x.device}")


def check_rank(rank, what: str = "rank") -> int:
    """``rank`` as a positive int, or a ``ValueError`` naming ``what``."""
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"{what} must be a positive int, got {rank!r}")
    return rank


def check_permutations(value: torch.Tensor, shape: tuple[int, int], what: str) -> None:
    """``value`` must be an int64 tensor of ``shape`` whose every row is a permutation of ``0 … shape[1] − 1``;
    else a ``ValueError`` that starts with ``what`` (e.g. the state-dict key). Values on the meta device, which
    hold none, are checked for dtype and shape only."""
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{what} must be a tensor, got {type(value).__name__}")
    expected = f"an int64 tensor of shape {tuple(shape)}, each row a permutation of 0 … {shape[1] - 1}"
    if value.dtype != torch.int64 or tuple(value.shape) != tuple(shape):
        raise ValueError(f"{what} must be {expected}; got {value.dtype} of shape {tuple(value.shape)}")
    if value.is_meta or value.numel() == 0:
        return
    rows = value.detach().sort(dim=1).values != torch.arange(shape[1], device=value.device)
    bad = rows.any(dim=1).nonzero()
    if bad.numel():
        row = int(bad[0])
        entries = value[row]
        if bool(((entries < 0) | (entries >= shape[1])).any()):
            reason = f"entries outside 0 … {shape[1] - 1}"
        else:
            reason = "repeated entries"
        raise ValueError(f"{what} must be {expected}; row {row} has {reason}")
