"""Tables of the native kernels' own real FFT (``kernels.c``: a radix-4/8 FFT on chunks of rows, bins left in
bit-reversed order) for power-of-two lengths, shared by the ACDC cascade and the fused DCT."""

from __future__ import annotations

import numpy as np
import torch

from ._backend import constant_cache

__all__ = ["fft_twiddles", "fft_tables"]


def fft_twiddles(n: int) -> tuple[np.ndarray, np.ndarray]:
    """``(tw, br)`` for a real FFT of length ``n`` (a power of two ≥ 2), ``m = n/2``, in float64: ``br`` the bit
    reversal of ``0 … m − 1`` (int64) and ``tw`` (``4m``) the complex FFT's twiddles ``(cos 2πt/m, −sin 2πt/m)``
    for ``t < m``, then ``(cos 2πk/n, sin 2πk/n)`` with ``k = br[p]`` for ``p < m`` (both interleaved), with exact
    zeros at quarter turns."""
    m = n // 2
    bits = m.bit_length() - 1
    ranks, reversed_ranks = np.arange(m), np.zeros(m, dtype=np.int64)
    for b in range(bits):
        reversed_ranks |= ((ranks >> b) & 1) << (bits - 1 - b)
    t = 2 * np.pi * ranks / m
    k = 2 * np.pi * reversed_ranks / n
    tw = np.concatenate([np.stack([np.cos(t), -np.sin(t)], 1).ravel(), np.stack([np.cos(k), np.sin(k)], 1).ravel()])
    tw[np.abs(tw) < 1e-15] = 0.0
    return tw, reversed_ranks


@constant_cache(maxsize=64)
def fft_tables(n: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`fft_twiddles` as CPU tensors, ``tw`` in ``dtype``; cached."""
    tw, br = fft_twiddles(n)
    return torch.as_tensor(tw, dtype=dtype), torch.as_tensor(br)
