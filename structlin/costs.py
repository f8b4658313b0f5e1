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
    "dctn_flops",
    "dct1_flops",
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


def dctn_flops(sizes) -> int:
    """FLOPs of one DCT-II (or its inverse) over several dimensions of lengths ``sizes`` (one block of the
    transformed dimensions; multiply by the number of such blocks in a tensor).

    With ``P = Π sizes`` and ``n_j`` the last size: one real n-D FFT of ``P`` points (``2.5 P log2 P``), for each
    dimension but the last one complex map ``p Z + q Z_mirrored`` on each of the ``P / n_j · (n_j//2 + 1)`` bins
    (two complex multiplies and one complex add: 14), and the last dimension's twiddle pass (``3 P``). For one
    dimension this is :func:`dct_flops`.
    """
    sizes = [int(n) for n in sizes]
    if not sizes or min(sizes) < 1:
        raise ValueError(f"transform lengths must be >= 1 (and at least one), got {sizes}")
    total = 1
    for n in sizes:
        total *= n
    bins = total // sizes[-1] * (sizes[-1] // 2 + 1)
    return rfft_flops(total) + 14 * bins * (len(sizes) - 1) + 3 * total


def dct1_flops(n: int, scaled_ends: bool = False) -> int:
    """FLOPs of one DCT-I (or its inverse) of length ``n ≥ 2``: one real FFT of the even extension, length
    ``2(n − 1)``, ``n`` multiplies for the normalization of the outputs and, when ``scaled_ends`` (the orthonormal
    normalization and the adjoints), 2 for the input's end points."""
    if n < 2:
        raise ValueError(f"a DCT-I needs length >= 2, got {n}")
    return rfft_flops(2 * (n - 1)) + n + (2 if scaled_ends else 0)


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


def acdc_recompute_flops(n: int, k: int, relu: bool = False) -> int:
    """FLOPs per row that a ``k``-block cascade's backward adds when it recomputes the block inputs from the
    cascade's input instead of reading saved ones: for each block but the last, the per-bin map (6 per bin) and
    the ``irfft`` that give the next block's input, and its ReLU (``n``) when there are ReLUs between blocks. The
    rest of that recomputation, ``rfft(A·x)`` of every block, is what :func:`acdc_block_backward_flops` counts
    already."""
    return (k - 1) * (6 * (n // 2 + 1) + rfft_flops(n) + (n if relu else 0))


#: Constants of :func:`acdc_path_seconds` per engine, in seconds on the reference machine (2 cores of an Intel
#: Xeon with AVX-512, 2 threads, float32; fitted to the minimum of many alternated forward+backward steps, see
#: ``docs/acdc.md``). ``block = (c, p, e)``: a row through one block costs ``c · n · log2(n)^p + e``; ``row =
#: (a, b)``: a row's other passes (gathers, loads and stores, the bias) ``a · n + b``; ``fixed``: a call of
#: the cascade; ``dense_fixed``: what the dense path adds to a call of ``nn.Linear``'s GEMMs; ``gemm = (rate, half)``:
#: a GEMM of FLOPs ``f`` with smallest dimension ``s`` takes ``f / (rate · s / (s + half))``; ``lanes``: rows are
#: processed in chunks of this many float32 rows; ``forward``: the share of forward+backward a forward alone takes.
#: ``cpu-torch`` (the PyTorch path on the CPU) scales the native constants by its measured slowdown; ``cuda`` is an
#: estimate (kernel launches per block, memory-bound passes, a fast GEMM), not a measurement.
ACDC_TIME_MODEL = {
    "cpu-native": dict(block=(0.0199e-9, 1.77, 8e-9), row=(1.5e-9, 40e-9), fixed=185e-6, dense_fixed=170e-6,
                       gemm=(340e9, 64), gemm_fixed=70e-6, lanes=16, forward=0.3),
    "cpu-torch": dict(block=(4 * 0.0199e-9, 1.77, 4 * 8e-9), row=(4 * 1.5e-9, 4 * 40e-9), fixed=500e-6,
                      dense_fixed=550e-6, gemm=(340e9, 64), gemm_fixed=70e-6, lanes=1, forward=0.35),
    "cuda": dict(block=(5e-11, 1.0, 75e-6), row=(2e-11, 0.0), fixed=100e-6, dense_fixed=150e-6,
                 gemm=(20e12, 256), gemm_fixed=30e-6, lanes=1, forward=0.35),
}


def acdc_path_seconds(rows: int, in_features: int, out_features: int, depth: int, *, grad: bool = True,
                      native: bool = True, device_type: str = "cpu", itemsize: int = 4) -> tuple[float, float]:
    """Predicted seconds of the two ways to run a linear ``depth``-block ACDC cascade of size
    ``n = max(in_features, out_features)`` on ``rows`` rows, forward and (``grad``) backward:
    ``(fft, dense)``.

    * ``fft``: the cascade on the rows: ``fixed + rows' · (depth · block(n) + row(n))``, ``rows'`` the rows
      rounded up to whole chunks;
    * ``dense``: the cascade on the ``in_features`` rows of an identity (the layer's matrix), plus the GEMMs of
      ``nn.Linear(in_features, out_features)`` on the rows (forward and, with ``grad``, the input and weight
      gradients) and their fixed costs.

    Constants: :data:`ACDC_TIME_MODEL` (``cuda`` for any device but the CPU, ``cpu-torch`` off the native
    kernels). float64 (``itemsize`` 8) takes twice as long either way and has half the lanes per chunk."""
    model = ACDC_TIME_MODEL["cuda" if device_type != "cpu" else "cpu-native" if native else "cpu-torch"]
    n = max(in_features, out_features, 2)
    c, p, e = model["block"]
    a, b = model["row"]
    share = 1.0 if grad else model["forward"]
    lanes = max(1, model["lanes"] * 4 // itemsize)
    scale = itemsize / 4

    def cascade(r: int) -> float:
        padded = -(-r // lanes) * lanes
        per_row = depth * (c * n * math.log2(n) ** p + e) + a * n + b
        return share * (model["fixed"] + scale * padded * per_row)

    rate, half = model["gemm"]
    smallest = max(1, min(rows, in_features, out_features))
    gemm = (3 if grad else 1) * 2 * rows * in_features * out_features / (rate * smallest / (smallest + half) / scale)
    dense = share * (model["dense_fixed"] + model["gemm_fixed"]) + gemm + cascade(in_features) - share * model["fixed"]
    return cascade(rows), dense


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
