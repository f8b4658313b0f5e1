"""Costs of structlin's operations: one place for every FLOP formula.

Conventions (see ``docs/flops.md``):

* one multiply-add is 2 FLOPs, as ``torch.utils.flop_counter`` counts a matmul;
* a complex FFT of length ``n`` costs ``5 n log2 n`` real FLOPs (FFTW's benchmark convention), a real FFT
  (``rfft``/``irfft``) half of that;
* a Walsh-Hadamard transform of length ``n`` costs ``n log2 n`` additions/subtractions;
* an elementwise op costs one FLOP per output element per arithmetic operation.

Every formula counts one transform of length ``n``; multiply by the number of rows for a batch. Counts that
are not integers (FFT lengths that are not powers of two) are rounded to the nearest integer per transform.
"""

from __future__ import annotations

import dataclasses
import math

__all__ = [
    "Cost",
    "fft_flops",
    "rfft_flops",
    "dct_flops",
    "idct_flops",
    "fwht_flops",
]


@dataclasses.dataclass(frozen=True)
class Cost:
    """Analytic cost of running a module once on a batch.

    Attributes:
        params: number of parameters.
        forward_flops: FLOPs of the forward pass.
        backward_flops: FLOPs of the backward pass (gradients for inputs and parameters).
        saved_bytes: bytes autograd keeps between forward and backward.
    """

    params: int = 0
    forward_flops: int = 0
    backward_flops: int = 0
    saved_bytes: int = 0

    def __add__(self, other: "Cost") -> "Cost":
        if not isinstance(other, Cost):
            return NotImplemented
        return Cost(*(a + b for a, b in zip(dataclasses.astuple(self), dataclasses.astuple(other))))


def _log2(n: int) -> float:
    if n < 1:
        raise ValueError(f"transform length must be >= 1, got {n}")
    return math.log2(n)


def fft_flops(n: int) -> int:
    """FLOPs of one complex FFT of length ``n``: ``5 n log2 n``."""
    return round(5 * n * _log2(n))


def rfft_flops(n: int) -> int:
    """FLOPs of one real FFT (``rfft`` or ``irfft``) of length ``n``: ``2.5 n log2 n``."""
    return round(2.5 * n * _log2(n))


def dct_flops(n: int) -> int:
    """FLOPs of one DCT-II of length ``n`` computed through one real FFT (Makhoul 1980).

    ``rfft_flops(n)`` for the FFT plus ``3 n`` for the twiddle pass (each output is ``a·Re + b·Im``: two
    multiplies and one add). The input reordering moves data and costs no FLOPs.
    """
    return rfft_flops(n) + 3 * n


def idct_flops(n: int) -> int:
    """FLOPs of one DCT-III (inverse DCT) of length ``n``: the twiddle pass (``3 n``) and one ``irfft``."""
    return rfft_flops(n) + 3 * n


def fwht_flops(n: int, normalized: bool = True) -> int:
    """FLOPs of one fast Walsh-Hadamard transform of length ``n``: ``n log2 n`` additions, plus ``n``
    multiplies for the ``1/sqrt(n)`` scaling when ``normalized``."""
    return round(n * _log2(n)) + (n if normalized else 0)


def acdc_block_flops(n: int) -> int:
    """FLOPs of one fused ACDC block ``x ↦ C⁻¹ diag(D) C diag(A) x`` of size ``n``, per row (forward).

    ``n`` multiplies for ``A``, one rfft and one irfft, and the per-bin 2×2 map for ``C⁻¹ D C``
    (4 multiplies and 2 adds on each of the ``n//2 + 1`` bins).
    """
    return n + 2 * rfft_flops(n) + 6 * (n // 2 + 1)


def acdc_block_backward_flops(n: int) -> int:
    """FLOPs of one ACDC block's backward, per row: the rfft of the gradient, the 2×2 map and irfft for the
    input gradient, the recomputed ``rfft(A·x)`` (``n`` + rfft), the coefficient gradients (3 products and 1
    add for the off-diagonal on each bin, plus 3 accumulations: 8 per bin) and the gradients of ``x`` and ``A``
    (``n`` multiplies each, ``n`` accumulations)."""
    bins = n // 2 + 1
    return 3 * rfft_flops(n) + 6 * bins + n + 8 * bins + 3 * n


def acdc_coefficient_flops(n: int) -> int:
    """FLOPs of one ACDC block's per-bin coefficients ``(m00, m01, m11)`` from ``D`` (per block, not per row):
    ``m00 = c² d1 + s² d2``, ``m01 = cs (d1 − d2)``, ``m11 = s² d1 + c² d2``, 8 per bin."""
    return 8 * (n // 2 + 1)


def acdc_coefficient_backward_flops(n: int) -> int:
    """FLOPs of taking the coefficient gradients back to ``D`` (per block): each of the three per-bin sums times
    the bin's weight (3), the gradients reaching ``d1`` and ``d2`` (5 each) and adding ``d2``'s into ``D`` (1):
    14 per bin."""
    return 14 * (n // 2 + 1)


def fastfood_flops(rows: int, in_features: int, size: int, blocks: int, out_features: int, bias: bool = True) -> int:
    """FLOPs of one fused Fastfood forward on ``rows`` rows: ``blocks`` blocks ``S H G Π H B`` of size ``size``
    (``d``, a power of two), input ``in_features`` (zero-padded to ``d``), output ``out_features`` (truncated).

    Per row and block: ``in_features`` multiplies by ``B`` (the padding is never multiplied), two unnormalized
    FWHTs (``d log2 d`` each), ``d`` multiplies by ``G/d`` after the permutation; per row ``out_features``
    multiplies by ``S`` and, with a bias, ``out_features`` adds. Once per call: ``blocks · d`` multiplies to
    fold the two ``1/√d`` of the orthonormal transforms into ``G``.
    """
    per_block = in_features + 2 * fwht_flops(size, normalized=False) + size
    per_row = blocks * per_block + out_features * (2 if bias else 1)
    return rows * per_row + blocks * size


def fastfood_backward_flops(
    rows: int,
    in_features: int,
    size: int,
    blocks: int,
    out_features: int,
    needs: tuple = (True, True, True, True, True),
) -> int:
    """FLOPs of the fused Fastfood backward for the gradients flagged in ``needs`` =
    ``(input, B, G, S, bias)``, as :mod:`structlin.transforms.fastfood` executes it (only the input is saved,
    so the forward's intermediates are recomputed where a gradient needs them).

    Per row and block (``d = size``, ``h = d log2 d``):

    * ``G`` or ``S``: recompute ``u = H B x`` (``in_features + h``);
    * ``S``: recompute ``w = H (G/d) Π u`` (``d + h``), and ``grad S = Σ_rows g ⊙ w`` (2 per output element);
    * input, ``B`` or ``G``: ``g₁ = H (S ⊙ g)`` (``out_features`` per row, ``h`` per block);
    * ``G``: ``grad G = Σ_rows g₁ ⊙ Π u`` (``2 d``), then ``/d`` once per call (``blocks · d``);
    * input or ``B``: ``g₀ = H Πᵀ ((G/d) ⊙ g₁)`` (``d + h``); ``grad B = Σ_rows g₀ ⊙ x`` (``2 in_features``);
      ``grad x = Σ_blocks B ⊙ g₀`` (``(2 blocks − 1) in_features`` per row);
    * bias: ``Σ_rows g`` (``out_features`` per row).

    Once per call, ``blocks · d`` multiplies for ``G/d`` whenever a transform of the gradient runs.
    """
    need_x, need_b, need_g, need_s, need_bias = (bool(n) for n in needs)
    h = fwht_flops(size, normalized=False)
    per_row = 0
    if need_g or need_s:
        per_row += blocks * (in_features + h)
    if need_s:
        per_row += blocks * (size + h) + 2 * out_features
    if need_x or need_b or need_g:
        per_row += out_features + blocks * h
    if need_g:
        per_row += blocks * 2 * size
    if need_x or need_b:
        per_row += blocks * (size + h)
    if need_b:
        per_row += blocks * 2 * in_features
    if need_x:
        per_row += (2 * blocks - 1) * in_features
    if need_bias:
        per_row += out_features
    per_call = (blocks * size if (need_x or need_b or need_g or need_s) else 0) + (blocks * size if need_g else 0)
    return rows * per_row + per_call
