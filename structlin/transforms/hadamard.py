r"""The fast Walsh-Hadamard transform over the last dimension (Sylvester order, as ``scipy.linalg.hadamard``).

Two implementations compute the same function:

* native C kernels (CPU, float32/float64): in-place butterflies kept in cache, rows split across threads;
* a Kronecker split everywhere else (CUDA, other dtypes, no compiler): ``H_n = H_{n_1} ⊗ … ⊗ H_{n_j}``, so
  viewing a row as an ``n_1 × … × n_j`` array, ``H_n x`` applies a small dense ``H_{n_i}`` along each axis —
  ``j`` batched matmuls that run at BLAS speed. On the CPU this measured faster than ``log2 n`` passes of
  PyTorch butterflies (:func:`fwht_butterfly`, kept as a reference and benchmark baseline).

Under ``torch.func`` transforms and forward-mode AD, :func:`fwht` runs the Kronecker split (plain matmuls)
instead of the custom op, so those transforms differentiate and batch it with their own rules (see
:mod:`structlin.transforms._backend`).
"""

from __future__ import annotations

import math
import operator

import scipy.linalg
import torch
import torch.nn.functional as F

from .. import _native
from ..costs import fwht_flops
from ._backend import constant_cache, uses_native
from ._checks import as_computable, check_power_of_two, in_dtype_of
from ._ops import define_linear_op

__all__ = ["fwht", "fwht_butterfly", "next_power_of_2"]

# Largest dense factor of the Kronecker split, as log2: 2**6 = 64 (n = 4096 runs as two 64 × 64 matmuls).
_MAX_FACTOR_LOG2 = 6


def _factor_log2s(log2n: int) -> list[int]:
    """Split ``log2n`` into as few near-equal parts as possible, none above ``_MAX_FACTOR_LOG2``."""
    parts = max(1, -(-log2n // _MAX_FACTOR_LOG2))
    base, extra = divmod(log2n, parts)
    return [base + 1] * extra + [base] * (parts - extra)


@constant_cache(maxsize=64)
def _hadamard(size: int, scale: float, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return torch.as_tensor(scipy.linalg.hadamard(size) * scale, dtype=dtype, device=device)


def _fwht_kronecker(x: torch.Tensor, normalized: bool) -> torch.Tensor:
    n = x.shape[-1]
    y = x.reshape(-1, n)
    rows = y.shape[0]
    scale = 1 / math.sqrt(n) if normalized else 1.0
    factors = [1 << k for k in _factor_log2s(n.bit_length() - 1)]
    before = 1
    for i, size in enumerate(factors):
        h = _hadamard(size, scale if i == 0 else 1.0, x.device, x.dtype)
        after = n // (before * size)
        if after == 1:  # the last axis: one (rows·before, size) @ (size, size) matmul; H is symmetric
            y = torch.matmul(y.reshape(rows * before, size), h)
        else:
            y = torch.matmul(h, y.reshape(rows * before, size, after))
        before *= size
    return y.reshape(x.shape)


def _fwht_native(x: torch.Tensor, normalized: bool) -> torch.Tensor:
    n = x.shape[-1]
    out = x.reshape(-1, n).clone(memory_format=torch.contiguous_format)
    _native.fwht_(out, 1 / math.sqrt(n) if normalized else 1.0)
    return out.view(x.shape)


def _fwht_impl(x: torch.Tensor, normalized: bool) -> torch.Tensor:
    return _fwht_native(x, normalized) if uses_native(x) else _fwht_kronecker(x, normalized)


def _fwht_backward(grad: torch.Tensor, normalized: bool) -> torch.Tensor:
    return _fwht_op(grad, normalized)  # H is symmetric: the transform is its own adjoint


_fwht_op = define_linear_op("fwht", _fwht_impl, _fwht_backward, fwht_flops)


def next_power_of_2(n: int) -> int:
    """The smallest power of two ``≥ n`` (``n`` itself when it is one; 1 for ``n = 0``).

    Raises:
        TypeError: ``n`` is not an integer. ValueError: ``n`` is negative.
    """
    if isinstance(n, bool):
        raise TypeError(f"next_power_of_2 expects an int, got {n!r}")
    try:
        n = operator.index(n)
    except TypeError:
        raise TypeError(f"next_power_of_2 expects an int, got {type(n).__name__}") from None
    if n < 0:
        raise ValueError(f"next_power_of_2 expects n >= 0, got {n}")
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


def fwht(x: torch.Tensor, normalized: bool = True, pad: bool = False) -> torch.Tensor:
    """Walsh-Hadamard transform over the last dimension: ``y = x @ H_n`` (``H_n`` symmetric, Sylvester order).

    Args:
        x: ``(..., n)`` real tensor, ``n`` a power of two (any ``n ≥ 1`` with ``pad=True``). float16/bfloat16 are
            computed in float32.
        normalized: scale by ``1/√n`` so the transform is orthogonal (and its own inverse); with ``pad=True``,
            ``n`` is the padded length.
        pad: zero-pad the last dimension to :func:`next_power_of_2` of ``n`` first (nothing is added when ``n`` is
            already a power of two). The result then has the padded length; the gradient reaches ``x`` only.

    Returns:
        ``(..., n)`` tensor (``(..., next_power_of_2(n))`` with ``pad=True``) of ``x``'s dtype, contiguous.
        Differentiable (the gradient is the same transform).

    Raises:
        ValueError: ``n`` is not a power of two and ``pad`` is false (the message names the nearest valid lengths).

    Cost: ``n log2 n`` additions per row, plus ``n`` multiplies when normalized (:func:`structlin.costs.fwht_flops`).
    """
    computed = as_computable(x, "fwht")
    n = x.shape[-1]
    if pad and n != next_power_of_2(n):
        computed = F.pad(computed, (0, next_power_of_2(n) - n))
    else:
        check_power_of_two(n, "fwht")
    return in_dtype_of(_fwht_op(computed, bool(normalized)), x)


def fwht_butterfly(x: torch.Tensor, normalized: bool = True) -> torch.Tensor:
    """Reference FWHT as ``log2 n`` passes of PyTorch butterflies, differentiable by plain autograd.

    Slower than :func:`fwht` (see ``docs/benchmarks.md``); kept as an independent check and a baseline.
    """
    n = x.shape[-1]
    check_power_of_two(n, "fwht_butterfly")
    lead = x.shape[:-1]
    y = x.reshape(-1, n)
    half = 1
    while half < n:
        pairs = y.reshape(-1, n // (2 * half), 2, half)
        y = torch.stack([pairs[:, :, 0] + pairs[:, :, 1], pairs[:, :, 0] - pairs[:, :, 1]], dim=2)
        half *= 2
    y = y.reshape(*lead, n)
    return y / math.sqrt(n) if normalized else y
