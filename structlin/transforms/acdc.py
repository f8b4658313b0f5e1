r"""The fused ACDC cascade and the last-dimension gather it is chained with.

An ACDC block is ``x ↦ C⁻¹ diag(D) C diag(A) x`` with ``C`` the orthonormal DCT-II. With Makhoul's reordering
``P`` (``v = P x``, see :mod:`structlin.transforms.dct`) the DCT is ``C x = T(rfft(P x))`` for a per-bin twiddle
``T``, and ``C⁻¹ diag(D) C`` becomes, in the reordered domain, one rfft, a fixed real 2×2 map on each bin
``V_k = R_k + i I_k`` and one irfft::

    P C⁻¹ diag(D) C P⁻¹ v = irfft(M ⊙ rfft(v)),   [R'_k, I'_k] = [[m00_k, m01_k], [m01_k, m11_k]] [R_k, I_k]

with ``c = cos θ_k``, ``s = sin θ_k``, ``θ_k = πk/2n``, ``d1 = D_k``, ``d2 = D_{n-k}`` (``D_0`` for k = 0):
``m00 = c² d1 + s² d2``, ``m11 = s² d1 + c² d2``, ``m01 = cs (d1 − d2)`` (:func:`bin_coefficients`).

A diagonal commutes with a permutation once permuted (``P diag(A) = diag(PA) P``), so a whole cascade runs in
the reordered domain: one gather in (with zero padding), per block a scale, an rfft, the map and an irfft,
fixed permutations between blocks composed with ``P`` into one gather each, and one gather out.

The block's map is symmetric for any real per-bin symmetric ``M``, so its input gradient is the same map
applied to the output gradient; the coefficient gradients follow from ``⟨g, irfft(W)⟩ = Σ_k w_k ⟨G_k, W_k⟩``
with ``G = rfft(g)`` and ``w_k = 1/n`` for the DC and Nyquist bins, ``2/n`` otherwise.

:func:`acdc_cascade` runs a whole cascade as one custom op, ``structlin::acdc_cascade``: gathers, blocks,
permutations, optional ReLUs, the per-bin coefficients and optional per-block output offsets ``B`` (the ACDC
authors' biases after the diagonals, folded: see :meth:`structlin.ACDC.block_offsets`), with an analytic backward
op (an offset's gradient is the sum over the rows of its block output's gradient). For backward it keeps
either every block input (``recompute=False``) or only its input ``x`` (``recompute=True``), from which the
backward recomputes the block inputs, a chunk of rows at a time, so that they never exist for the whole batch.

How it runs (the two paths compute the same function):

* **Native** (CPU, float32/float64, power-of-two ``n`` up to :data:`NATIVE_MAX_SIZE`): the whole cascade, forward
  or backward, is one C call with one parallel region. Rows are cut into chunks of one vector's width (16
  float32 rows with AVX-512), held "transposed" so that every lane of a vector is one row; a chunk runs through
  every block while it sits in the L2 cache, with structlin's own FFT (``kernels.c``). Workers claim chunks
  as they go, so a worker on a busy core holds up only the chunk it is on.
* **PyTorch** (any other size, device or dtype, and the composite form): ``torch.fft`` and gathers, run on
  chunks of rows of :data:`CHUNK_BYTES` bytes on the CPU (the whole batch at once elsewhere).

Under ``torch.func`` transforms and forward-mode AD the public functions run the same implementations directly,
on their pure-PyTorch path (FFTs, gathers and elementwise ops that those transforms differentiate and batch by
their own rules) instead of the custom ops; the backward's pure-PyTorch path is written out of place so that a
backward run under such a transform (``torch.autograd.grad(..., is_grads_batched=True)``, a dual
``grad_outputs``) is differentiable too. See :mod:`structlin.transforms._backend`.
"""

from __future__ import annotations

import functools
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from .. import _native
from ..costs import (
    acdc_block_backward_flops,
    acdc_block_flops,
    acdc_coefficient_backward_flops,
    acdc_coefficient_flops,
    acdc_recompute_flops,
)
from ._backend import constant_cache, dispatch, functorch_active, in_composite, native_for, uses_native
from ._native_fft import fft_twiddles
from ._ops import define_op, register_flops, rows_of

__all__ = ["acdc_cascade", "gather_last", "bin_coefficients", "bin_trig", "makhoul_order", "native_cascade",
           "NATIVE_MAX_SIZE", "CHUNK_BYTES"]

#: Largest block size the native cascade runs (a chunk's backward workspace grows with ``depth · n``); larger
#: sizes take the PyTorch path.
NATIVE_MAX_SIZE = 1 << 16
#: Bytes of a chunk of rows (``rows · n · itemsize``) on the PyTorch path on the CPU: it bounds the backward's
#: transient memory; 4 MB measured faster than 0.25 MB, 1 MB and the whole batch (docs/benchmarks.md).
CHUNK_BYTES = 1 << 22


def makhoul_order(n: int) -> np.ndarray:
    """``σ`` with ``(P x)[j] = x[σ[j]]``: ``[0, 2, 4, …, 5, 3, 1]``."""
    return np.concatenate([np.arange(0, n, 2), np.arange(n - 1 - (n % 2 == 1), 0, -2)])


def bin_trig(n: int, device=None, dtype=None):
    """Constants of :func:`bin_coefficients` for size ``n``: ``(c², s², cs, mirror)``, ``(n//2 + 1,)`` each;
    ``mirror[k] = n − k`` (0 for k = 0)."""
    theta = np.pi * np.arange(n // 2 + 1) / (2 * n)
    c, s = np.cos(theta), np.sin(theta)
    mirror = np.concatenate([[0], n - np.arange(1, n // 2 + 1)])
    as_tensor = functools.partial(torch.as_tensor, device=device)
    return as_tensor(c * c, dtype=dtype), as_tensor(s * s, dtype=dtype), as_tensor(c * s, dtype=dtype), as_tensor(mirror)


def bin_coefficients(D: torch.Tensor, trig=None):
    """Per-bin coefficients ``(m00, m01, m11)``, each ``(..., n//2 + 1)``, of ``C⁻¹ diag(D) C`` for ``D`` of
    shape ``(..., n)``. Differentiable in ``D``. ``trig`` is :func:`bin_trig`'s result (built here if omitted)."""
    n = D.shape[-1]
    c2, s2, cs, mirror = trig if trig is not None else bin_trig(n, D.device, D.dtype)
    d1 = D[..., : n // 2 + 1]
    d2 = D.index_select(-1, mirror)
    return c2 * d1 + s2 * d2, cs * (d1 - d2), s2 * d1 + c2 * d2


def _apply_bins(spectrum: torch.Tensor, m00, m01, m11, in_place: bool = True) -> torch.Tensor:
    """The symmetric 2×2 map on each bin: one native pass on the CPU (over ``spectrum`` itself unless
    ``in_place`` is False), else ``α V + β conj(V)`` with ``α = (m00 + m11)/2`` and ``β = (m00 − m11)/2 + i m01``
    (three passes over contiguous complex data)."""
    if uses_native(spectrum.real) and spectrum.dim() == 2 and spectrum.is_contiguous():
        out = spectrum if in_place else torch.empty_like(spectrum)
        _native.bin_map(torch.view_as_real(spectrum), m00.contiguous(), m01.contiguous(), m11.contiguous(),
                        torch.view_as_real(out))
        return out
    alpha = (m00 + m11) / 2
    beta = torch.complex((m00 - m11) / 2, m01)
    return torch.addcmul(spectrum * alpha, _conj(spectrum), beta)


def _conj(z: torch.Tensor) -> torch.Tensor:
    """``conj(z)``: a physical copy (``torch.compile`` miscompiled a lazy conj view inside a custom op; forward AD
    under the legacy vmap of ``torch.autograd.functional`` rejects the view), except under ``torch.func``
    transforms, where ``conj_physical`` has no batching rule and the lazy view is exact."""
    return z.conj() if in_composite() and functorch_active() else torch.conj_physical(z)


@constant_cache(maxsize=64)
def _bin_weights(n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``(n//2 + 1,)`` weights of each rfft bin in the coefficient gradients: ``1/n`` at DC (and Nyquist for even
    ``n``), ``2/n`` elsewhere. Cached: only the cascade backward's implementation (never traced) reads it."""
    w = torch.full((n // 2 + 1,), 2.0 / n, dtype=dtype, device=device)
    w[0] = 1.0 / n
    if n % 2 == 0:
        w[-1] = 1.0 / n
    return w


@constant_cache(maxsize=64)
def _fft_tables(n: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """The native cascade's tables for blocks of size ``n`` (a power of two ≥ 2), on the CPU: ``(table, br)``
    with the FFT's tables ``tw``, ``br`` of :func:`~._native_fft.fft_twiddles`, and ``table`` = ``tw`` followed by
    :func:`bin_trig`'s ``c²``, ``s²`` and ``cs`` (``m + 1`` each), in ``dtype`` (computed in float64)."""
    tw, br = fft_twiddles(n)
    trig = [t.numpy() for t in bin_trig(n, dtype=torch.float64)[:3]]
    return torch.as_tensor(np.concatenate([tw, *trig]), dtype=dtype), torch.as_tensor(br)


def native_cascade(n: int, dtype: torch.dtype, device_type: str = "cpu") -> bool:
    """Whether a cascade of block size ``n`` on tensors of ``dtype`` on ``device_type`` runs on the native
    kernels: CPU float32/float64 with the kernels on, and ``n`` a power of two from 2 to
    :data:`NATIVE_MAX_SIZE`."""
    return 2 <= n <= NATIVE_MAX_SIZE and n & (n - 1) == 0 and native_for(device_type, dtype)


def _native_tables_ok(n: int, in_inverse, perm_index, perm_inverse, out_index) -> bool:
    """The gathers as the native kernels read them: input columns and output columns at positions in range,
    permutations without padding (the PyTorch path handles any other table)."""
    n_in = n if in_inverse is None else in_inverse.shape[0]
    n_out = n if out_index is None else out_index.shape[0]
    return (_native.index_ok(in_inverse, n_in, n) and _native.index_ok(out_index, n_out, n)
            and _native.index_ok(perm_index, n, n, 0) and _native.index_ok(perm_inverse, n, n, 0))


def _chunks(rows: int, n: int, like: torch.Tensor) -> list[tuple[int, int]]:
    """Row ranges of the PyTorch path: :data:`CHUNK_BYTES` each on the CPU; the whole batch on other devices
    and in a composite form."""
    step = rows
    if like.device.type == "cpu" and not in_composite():
        step = max(1, CHUNK_BYTES // (n * like.element_size()))
    return [(r, min(r + step, rows)) for r in range(0, rows, step)]


def _column_dot_and_scale(
    g: torch.Tensor, x: torch.Tensor, a: torch.Tensor, relu_mask: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(Σ_rows g ⊙ x, g ⊙ a)``, the latter zeroed where ``x <= 0`` with ``relu_mask``. ``g``, ``x``:
    ``(rows, n)``; ``a`` and the sum ``(n,)``. One pass on the native path, which overwrites ``g``."""
    if uses_native(x) and g.is_contiguous() and x.is_contiguous() and a.is_contiguous():
        column_sums = x.new_empty(x.shape[1])
        return column_sums, _native.colsum_scale_(g, x, a, column_sums, relu_mask)
    scaled = g * a
    return (g * x).sum(0), (scaled.masked_fill(x <= 0, 0) if relu_mask else scaled)


def _output_size(A: torch.Tensor, out_index: torch.Tensor | None) -> int:
    return A.shape[1] if out_index is None else out_index.shape[0]


def _input_shape(first_block_input: torch.Tensor, in_inverse: torch.Tensor | None) -> tuple:
    """The shape of the cascade's input ``x``, from what the first block read and the input gather."""
    size = first_block_input.shape[-1] if in_inverse is None else in_inverse.shape[0]
    return (*first_block_input.shape[:-1], size)


@constant_cache(maxsize=64)
def _cached_trig(n: int, dtype: torch.dtype, device: torch.device):
    return bin_trig(n, device, dtype)


def _reordered_parameters(A: torch.Tensor, D: torch.Tensor, B: Optional[torch.Tensor] = None):
    """``(a, (m00, m01, m11), b, unorder, trig)``: ``A`` in Makhoul order, the per-bin coefficients of ``D``,
    ``B`` in Makhoul order (None without ``B``), and what takes gradients back (the inverse order and
    :func:`bin_trig`)."""
    n = A.shape[1]
    order, unorder = _makhoul_indices(n, A.device)
    trig = _cached_trig(n, A.dtype, A.device)
    b = None if B is None else B.index_select(1, order)
    return A.index_select(1, order), bin_coefficients(D, trig), b, unorder, trig


def _permutation(index: Optional[torch.Tensor], inverse: Optional[torch.Tensor], i: int):
    return (None, None) if index is None else (index[i], inverse[i])


def _blocks(v: torch.Tensor, a, coefficients, shift, perm_index, perm_inverse, relu: bool, keep_inputs: bool = False,
            for_backward: bool = False):
    """The PyTorch path: the ``k`` blocks on rows ``v`` ``(rows, n)`` (the first block's input), each block's
    output offset by ``shift[i]`` (``(k, n)`` reordered, or None). Returns
    ``(output, inputs, spectra)``: ``inputs`` the ``k`` block inputs with ``keep_inputs`` or ``for_backward``;
    with ``for_backward`` also ``spectra``, each block's ``rfft(a_i ⊙ v_i)``, and the last block stops at its
    spectrum (``output`` is None): what the backward needs."""
    k, n = a.shape
    m00, m01, m11 = coefficients
    inputs, spectra = [], []
    for i in range(k):
        if i > 0:
            index, inverse = _permutation(perm_index, perm_inverse, i - 1)
            if index is not None:
                v = _gather_impl(v, index, inverse)
            if relu:
                # in place on this function's own tensor (a gather's or an irfft's output), but not in a composite
                # form, where transforms trace or differentiate through it
                v = v.relu() if in_composite() else v.relu_()
        if keep_inputs or for_backward:
            inputs.append(v)
        spectrum = torch.fft.rfft(v * a[i])
        if for_backward:
            spectra.append(spectrum)
            if i == k - 1:
                return None, inputs, spectra
        v = torch.fft.irfft(_apply_bins(spectrum, m00[i], m01[i], m11[i], in_place=not for_backward), n=n)
        if shift is not None:
            v = v + shift[i] if in_composite() else v.add_(shift[i])
    return v, inputs, spectra


def _blocks_backward(g: torch.Tensor, inputs, spectra, a, coefficients, perm_index, perm_inverse, relu: bool,
                     shifted: bool = False):
    """The PyTorch path of the blocks' backward on rows: from the gradient of the last block's output ``g``
    ``(rows, n)`` and the block inputs (and their spectra, else recomputed here), ``(gradient of the first
    block's input, Σ_rows grad_a (k, n), coefficient sums (k, n//2 + 1, 3), Σ_rows of each block's output
    gradient (k, n) with ``shifted``, else None)``."""
    k, n = a.shape
    m00, m01, m11 = coefficients
    grad_a, sums, grad_shift = [None] * k, [None] * k, [None] * k
    work = g.new_empty(g.shape[0], n) if uses_native(g) and spectra is None else None  # one buffer for a ⊙ v
    for i in reversed(range(k)):
        if shifted:
            grad_shift[i] = g.sum(0)
        v = inputs[i]
        G = torch.fft.rfft(g)
        if spectra is not None:
            U = spectra[i]
        else:
            U = torch.fft.rfft(v * a[i] if work is None else torch.mul(v, a[i], out=work))
        sums[i], mapped = _coefficient_sums_and_map(G, U, m00[i], m01[i], m11[i])
        # with ReLUs, v_i = relu(p) for i > 0 is positive exactly where p is: that masks the gradient reaching p
        grad_a[i], g = _column_dot_and_scale(torch.fft.irfft(mapped, n=n), v, a[i], relu_mask=relu and i > 0)
        if i > 0:
            index, inverse = _permutation(perm_index, perm_inverse, i - 1)
            if index is not None:  # the gradient reaching the gather's source
                g = _gather_impl(g, inverse, index)
    return g, torch.stack(grad_a), torch.stack(sums), torch.stack(grad_shift) if shifted else None


def _cascade_impl(
    x: torch.Tensor,
    A: torch.Tensor,
    D: torch.Tensor,
    B: Optional[torch.Tensor],
    in_index: Optional[torch.Tensor],
    in_inverse: Optional[torch.Tensor],
    perm_index: Optional[torch.Tensor],
    perm_inverse: Optional[torch.Tensor],
    out_index: Optional[torch.Tensor],
    out_inverse: Optional[torch.Tensor],
    relu: bool,
    keep: bool,
) -> list[torch.Tensor]:
    """``[y, *kept]``: the cascade's output and, when ``keep``, the block inputs backward needs (all ``k`` of
    them with an input gather, else the last ``k - 1``: the first is ``x``). ``B``: None, or ``(k, n)`` offsets
    (natural order) added to each block's output. ``relu``: a ReLU before every block but the first."""
    k, n = A.shape
    batch = x.shape[:-1]
    rows_x = x.reshape(-1, x.shape[-1])
    rows = rows_x.shape[0]
    kept_count = (k if in_index is not None else k - 1) if keep else 0
    if rows == 0:  # some FFT backends reject empty batches
        return [x.new_empty(*batch, _output_size(A, out_index))] + [x.new_empty(*batch, n) for _ in range(kept_count)]
    tables = (in_inverse, perm_index, perm_inverse, out_index)
    if native_cascade(n, x.dtype, x.device.type) and _native_tables_ok(n, *tables):
        y = rows_x.new_empty(rows, _output_size(A, out_index))
        kept = [rows_x.new_empty(rows, n) for _ in range(kept_count)]
        targets = ([None] if in_index is None else []) + kept if keep else None
        _native.acdc_forward(rows_x.contiguous(), in_inverse, A.contiguous(), D.contiguous(), perm_index, out_index,
                             *_fft_tables(n, x.dtype), targets, y, relu, None if B is None else B.contiguous())
        return [y.view(*batch, -1)] + [t.view(*batch, n) for t in kept]
    a, coefficients, shift, _, _ = _reordered_parameters(A, D, B)
    outputs, kept_parts = [], []
    for start, stop in _chunks(rows, n, rows_x):
        v = rows_x[start:stop]
        if in_index is not None:
            v = _gather_impl(v, in_index, in_inverse)
        v, inputs, _ = _blocks(v, a, coefficients, shift, perm_index, perm_inverse, relu, keep_inputs=keep)
        if out_index is not None:
            v = _gather_impl(v, out_index, out_inverse)
        outputs.append(v)
        kept_parts.append(inputs[1:] if in_index is None else inputs)
    y = outputs[0] if len(outputs) == 1 else torch.cat(outputs)
    kept = [parts[0] if len(parts) == 1 else torch.cat(parts) for parts in zip(*kept_parts)] if keep else []
    return [y.view(*batch, -1)] + [t.view(*batch, n) for t in kept]


def _cascade_backward_impl(
    grad: torch.Tensor,
    inputs: list[torch.Tensor],
    A: torch.Tensor,
    D: torch.Tensor,
    B: Optional[torch.Tensor],
    in_index: Optional[torch.Tensor],
    in_inverse: Optional[torch.Tensor],
    perm_index: Optional[torch.Tensor],
    perm_inverse: Optional[torch.Tensor],
    out_index: Optional[torch.Tensor],
    out_inverse: Optional[torch.Tensor],
    relu: bool,
    recompute: bool,
) -> list[torch.Tensor]:
    """``[grad_x, grad_A, grad_D, grad_B]`` from the output gradient and what the forward kept: ``inputs`` is
    ``[x]`` with ``recompute`` (every block input is recomputed from it, a chunk of rows at a time), else the
    ``k`` block inputs. ``grad_B`` is empty when ``B`` is None."""
    k, n = A.shape
    if not recompute and len(inputs) != k:
        raise RuntimeError("acdc_cascade ran with keep=False, so it saved nothing to differentiate with")
    shape = tuple(inputs[0].shape) if recompute else _input_shape(inputs[0], in_inverse)
    rows = grad.reshape(-1, grad.shape[-1]).shape[0]
    if rows == 0:
        return [grad.new_zeros(shape), torch.zeros_like(A), torch.zeros_like(D), _zeros_or_empty(B, A)]
    g_rows = grad.reshape(rows, -1)
    sources = [t.reshape(rows, -1) for t in inputs]
    tables = (in_inverse, perm_index, perm_inverse, out_index)
    if native_cascade(n, grad.dtype, grad.device.type) and _native_tables_ok(n, *tables):
        grad_x, grad_A, grad_D = g_rows.new_empty(rows, shape[-1]), A.new_empty(k, n), D.new_empty(k, n)
        grad_B = A.new_empty(k, n) if B is not None else None
        x, blocks = (sources[0].contiguous(), None) if recompute else (None, [t.contiguous() for t in sources])
        _native.acdc_backward(g_rows.contiguous(), x, in_inverse, out_index, blocks, A.contiguous(), D.contiguous(),
                              perm_index, perm_inverse, *_fft_tables(n, A.dtype), grad_x, grad_A, grad_D, relu,
                              None if B is None else B.contiguous(), grad_B)
        return [grad_x.view(shape), grad_A, grad_D, A.new_empty(0) if grad_B is None else grad_B]
    a, coefficients, shift, unorder, trig = _reordered_parameters(A, D, B)
    grad_parts, grad_a, sums, grad_shift = [], None, None, None
    for start, stop in _chunks(rows, n, g_rows):
        g = g_rows[start:stop]
        if out_index is not None:
            g = _gather_impl(g, out_inverse, out_index)
        if recompute:
            v = sources[0][start:stop]
            v = v if in_index is None else _gather_impl(v, in_index, in_inverse)
            _, block_inputs, spectra = _blocks(v, a, coefficients, shift, perm_index, perm_inverse, relu,
                                               for_backward=True)
        else:
            block_inputs, spectra = [t[start:stop] for t in sources], None
        g, chunk_a, chunk_sums, chunk_shift = _blocks_backward(g, block_inputs, spectra, a, coefficients, perm_index,
                                                               perm_inverse, relu, shifted=B is not None)
        if in_index is not None:  # the gradient reaching the input gather's source
            g = _gather_impl(g, in_inverse, in_index)
        grad_parts.append(g)
        grad_a = chunk_a if grad_a is None else grad_a + chunk_a
        sums = chunk_sums if sums is None else sums + chunk_sums
        if chunk_shift is not None:
            grad_shift = chunk_shift if grad_shift is None else grad_shift + chunk_shift
    grad_x = grad_parts[0] if len(grad_parts) == 1 else torch.cat(grad_parts)
    grad_A = grad_a.index_select(1, unorder)
    grad_B = A.new_empty(0) if grad_shift is None else grad_shift.index_select(1, unorder)
    return [grad_x.view(shape), grad_A, _coefficient_backward(sums, D, trig), grad_B]


def _zeros_or_empty(B: Optional[torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    """The gradient of an absent ``B`` (an empty tensor: a custom op returns tensors only), else zeros."""
    return like.new_empty(0) if B is None else torch.zeros_like(B)


def _coefficient_backward(sums: torch.Tensor, D: torch.Tensor, trig) -> torch.Tensor:
    """``grad_D`` ``(k, n)`` from the per-bin sums ``(k, n//2 + 1, 3)`` of the block backward: each sum times
    its bin's weight is the gradient of ``(m00, m01, m11)``, taken back through :func:`bin_coefficients`."""
    c2, s2, cs, mirror = trig
    w = _bin_weights(D.shape[-1], D.dtype, D.device)
    g00, g01, g11 = (w * sums[..., j] for j in range(3))
    through_d1 = F.pad(c2 * g00 + cs * g01 + s2 * g11, (0, D.shape[-1] - w.shape[0]))  # d1 = D[:, :bins]
    return through_d1.index_add(-1, mirror, s2 * g00 - cs * g01 + c2 * g11)  # d2 = D[:, mirror]


def _coefficient_sums_and_map(G: torch.Tensor, U: torch.Tensor, m00, m01, m11) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sums, M ⊙ G)`` for ``G``, ``U`` of shape ``(rows, m)``: per bin, summed over rows,
    ``sums = (Σ GR UR, Σ (GR UI + GI UR), Σ GI UI)`` (``(m, 3)``), and the bin map applied to ``G``. One pass
    on the native path, which overwrites ``G``."""
    if uses_native(G.real) and G.dim() == 2 and G.is_contiguous() and U.is_contiguous():
        coefficients = [c.contiguous() for c in (m00, m01, m11)]
        sums = G.real.new_empty(G.shape[1], 3)
        _native.bin_grad_map_(torch.view_as_real(G), torch.view_as_real(U), *coefficients, sums)
        return sums, G
    # Σ G·U = Σ (GR UR − GI UI) + i Σ (GR UI + GI UR);  Σ G·conj(U) has real part Σ (GR UR + GI UI)
    product = (G * U).sum(0)
    product_conj = (G * _conj(U)).sum(0).real
    sums = torch.stack([(product_conj + product.real) / 2, product.imag, (product_conj - product.real) / 2], dim=1)
    return sums, _apply_bins(G, m00, m01, m11)


@constant_cache(maxsize=64)
def _makhoul_indices(n: int, device: torch.device = torch.device("cpu")) -> tuple[torch.Tensor, torch.Tensor]:
    """Makhoul's order of size ``n`` (:func:`makhoul_order`) and its inverse, as int64 tensors on ``device``."""
    order = torch.as_tensor(makhoul_order(n), device=device)
    return order, torch.argsort(order)


def _gather_impl(x: torch.Tensor, index: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
    """``y[..., j] = x[..., index[j]]``, or 0 where ``index[j] < 0``."""
    if uses_native(x) and x.numel():
        n = x.shape[-1]
        rows = x.reshape(-1, n).contiguous()
        out = rows.new_empty(rows.shape[0], index.shape[0])
        if index.shape[0] == n:  # Makhoul's order and its inverse have fixed-pattern kernels, ~5× faster
            order, unorder = _makhoul_indices(n)
            if torch.equal(index, order):
                return _native.dct_reorder(rows, out).view(x.shape)
            if torch.equal(index, unorder):
                return _native.dct_unreorder(rows, out).view(x.shape)
        return _native.gather(rows, index, out).view(*x.shape[:-1], index.shape[0])
    # no padding: skip the copy (a data-dependent test, which vmap over a batch of indices cannot take)
    if index.device.type == "cpu" and not in_composite() and (index.numel() == 0 or index.min() >= 0):
        return x.index_select(-1, index)
    padded = torch.cat([x, x.new_zeros(*x.shape[:-1], 1)], dim=-1)
    return padded.index_select(-1, torch.where(index < 0, x.shape[-1], index))




def _relu_flops(rows: int, k: int, n: int, relu: bool) -> int:
    """The ReLUs between blocks (or their gradients): one op per element, as for a separate activation."""
    return rows * (k - 1) * n if relu else 0


_GATHERS = 6  # in_index, in_inverse, perm_index, perm_inverse, out_index, out_inverse


def _flag(after_parameters: tuple, kwargs: dict, name: str, position: int) -> bool:
    """A flag argument of either op (``relu`` first after the gathers, then ``keep`` or ``recompute``), from the
    arguments after ``A`` and ``D``."""
    return kwargs[name] if name in kwargs else bool(after_parameters[_GATHERS + position])


def _shift_flops(rows: int, k: int, n: int, B_shape) -> int:
    """The block output offsets: one add per element per block (forward, and the sums of their gradients over
    the rows in backward)."""
    return rows * k * n if B_shape is not None else 0


def _backward_flops(rows: int, k: int, n: int, relu: bool, recompute: bool, B_shape=None) -> int:
    """FLOPs of the backward op: each block's backward, the coefficient gradients and the ReLUs' gradients, and
    with ``recompute`` the recomputation of the block inputs (:func:`~structlin.costs.acdc_recompute_flops`),
    with the offsets' adds there; with offsets ``B``, the sums of their gradients over the rows."""
    flops = k * (rows * acdc_block_backward_flops(n) + acdc_coefficient_backward_flops(n))
    flops += _relu_flops(rows, k, n, relu)
    if B_shape is not None:
        flops += max(rows - 1, 0) * k * n + (rows * (k - 1) * n if recompute else 0)
    return flops + (rows * acdc_recompute_flops(n, k, relu) if recompute else 0)


def _save_cascade(ctx, inputs, output) -> None:
    """Save ``A``, ``D``, the gathers, and either the ``k`` block inputs (``keep``: ``x`` first when there is no
    input gather) or ``x`` alone (the backward recomputes the rest)."""
    x, A, D, B, *gathers, relu, keep = inputs
    ctx.relu, ctx.recompute, ctx.shifted = relu, not keep, B is not None
    ctx.mark_non_differentiable(*output[1:])
    if keep:
        block_inputs = list(output[1:]) if gathers[0] is not None else [x, *output[1:]]
    else:
        block_inputs = [x]
    ctx.save_for_backward(A, D, B, *gathers, *block_inputs)


def _cascade_gradients(ctx, grad: torch.Tensor | None) -> tuple:
    """Gradients of the op's inputs: ``x``, ``A``, ``D`` and ``B`` (None without it), then None for the gathers,
    ``relu`` and ``keep``."""
    if grad is None:  # only the kept tensors were used, and they carry no gradient
        return (None,) * (_GATHERS + 6)
    A, D, B, *rest = ctx.saved_tensors
    gathers, block_inputs = rest[:_GATHERS], rest[_GATHERS:]
    grad_x, grad_A, grad_D, grad_B = _cascade_backward_op(grad, block_inputs, A, D, B, *gathers, ctx.relu,
                                                          ctx.recompute)
    return grad_x, grad_A, grad_D, grad_B if ctx.shifted else None, *(None,) * (_GATHERS + 2)


class _Cascade(torch.autograd.Function):
    """The cascade op's implementation and gradient as an autograd Function: the eager route of
    :func:`~structlin.transforms._backend.dispatch` (and the op itself on torch < 2.4)."""

    @staticmethod
    def forward(ctx, *inputs):
        output = _cascade_impl(*inputs)
        ctx.set_materialize_grads(False)
        _save_cascade(ctx, inputs, output)
        return tuple(output)

    @staticmethod
    def backward(ctx, grad, *_grad_kept):
        return _cascade_gradients(ctx, grad)


class _Gather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, index, inverse):
        ctx.save_for_backward(index, inverse)
        return _gather_impl(x, index, inverse)

    @staticmethod
    def backward(ctx, grad):
        index, inverse = ctx.saved_tensors
        return _gather_op(grad, inverse, index), None, None


if hasattr(torch.library, "custom_op"):
    _cascade_custom = define_op("acdc_cascade", _cascade_impl)
    _cascade_backward_custom = define_op("acdc_cascade_backward", _cascade_backward_impl)
    _gather_custom = define_op("gather_last", _gather_impl)

    @_cascade_custom.register_fake
    def _(x, A, D, B, in_index, in_inverse, perm_index, perm_inverse, out_index, out_inverse, relu, keep):
        k, n = A.shape
        batch = x.shape[:-1]
        kept_count = (k if in_index is not None else k - 1) if keep else 0
        return [x.new_empty(*batch, _output_size(A, out_index))] + [x.new_empty(*batch, n) for _ in range(kept_count)]

    @_cascade_backward_custom.register_fake
    def _(grad, inputs, A, D, B, in_index, in_inverse, perm_index, perm_inverse, out_index, out_inverse, relu,
          recompute):
        shape = tuple(inputs[0].shape) if recompute else _input_shape(inputs[0], in_inverse)
        return [grad.new_empty(shape), A.new_empty(A.shape), D.new_empty(D.shape),
                A.new_empty(0) if B is None else B.new_empty(B.shape)]

    @_gather_custom.register_fake
    def _(x, index, inverse):
        return x.new_empty(*x.shape[:-1], index.shape[0])

    def _cascade_setup(ctx, inputs, output):
        ctx.set_materialize_grads(False)  # the kept block inputs get no gradient; do not make zeros for them
        _save_cascade(ctx, inputs, output)

    def _cascade_backward(ctx, grads):
        return _cascade_gradients(ctx, grads[0])

    def _gather_setup(ctx, inputs, output):
        x, index, inverse = inputs
        ctx.save_for_backward(index, inverse)

    def _gather_backward(ctx, grad):
        index, inverse = ctx.saved_tensors
        return _gather_op(grad, inverse, index), None, None

    _cascade_custom.register_autograd(_cascade_backward, setup_context=_cascade_setup)
    _gather_custom.register_autograd(_gather_backward, setup_context=_gather_setup)
    register_flops(
        "acdc_cascade",
        lambda x_shape, A_shape, D_shape, B_shape, *rest, out_shape=None, **kw: (
            A_shape[0] * (rows_of(x_shape) * acdc_block_flops(A_shape[1]) + acdc_coefficient_flops(A_shape[1]))
            + _relu_flops(rows_of(x_shape), *A_shape, _flag(rest, kw, "relu", 0))
            + _shift_flops(rows_of(x_shape), *A_shape, B_shape)
        ),
    )
    register_flops(
        "acdc_cascade_backward",
        lambda g_shape, input_shapes, A_shape, D_shape, B_shape, *rest, out_shape=None, **kw: _backward_flops(
            rows_of(g_shape), *A_shape, _flag(rest, kw, "relu", 0), _flag(rest, kw, "recompute", 1), B_shape
        ),
    )
else:  # torch < 2.4
    _cascade_custom, _cascade_backward_custom, _gather_custom = _Cascade.apply, _cascade_backward_impl, _Gather.apply


def _backward_eager(*args):
    """The backward op's eager route: its implementation, except when a graph of the backward is asked for
    (``create_graph=True``), where the custom op runs and autograd reports that it has no derivative."""
    return _cascade_backward_custom(*args) if torch.is_grad_enabled() else _cascade_backward_impl(*args)


def _cascade_composite(x, A, D, B, *gathers_and_flags) -> list[torch.Tensor]:
    """The cascade op's arguments → ``[y]``: :func:`_cascade_impl` without the kept block inputs (under
    ``torch.func`` transforms and forward-mode AD, where autograd records its pure-PyTorch ops itself)."""
    *gathers, relu, _keep = gathers_and_flags
    return _cascade_impl(x, A, D, B, *gathers, relu, False)


_cascade_op = dispatch(_cascade_custom, _cascade_composite, _Cascade.apply)
_cascade_backward_op = dispatch(_cascade_backward_custom, _cascade_backward_impl, _backward_eager)
_gather_op = dispatch(_gather_custom, _gather_impl, _Gather.apply)


def acdc_cascade(
    x: torch.Tensor,
    A: torch.Tensor,
    D: torch.Tensor,
    *,
    gather_in: tuple[torch.Tensor, torch.Tensor] | None = None,
    permutations: tuple[torch.Tensor, torch.Tensor] | None = None,
    gather_out: tuple[torch.Tensor, torch.Tensor] | None = None,
    relu: bool = False,
    recompute: bool = True,
    offsets: torch.Tensor | None = None,
) -> torch.Tensor:
    """``k`` ACDC blocks ``C⁻¹ diag(D_i) C diag(A_i)`` run in Makhoul's reordered domain: block ``i`` is
    ``v ↦ irfft(M_i ⊙ rfft(a_i ⊙ v)) + b_i`` with ``a_i`` the reordered ``A_i``, ``M_i`` from
    :func:`bin_coefficients` and ``b_i`` the reordered ``offsets[i]`` (0 without offsets).

    Args:
        x: ``(..., n)`` input in Makhoul order, or ``(..., n_in)`` with ``gather_in``.
        A, D: ``(k, n)`` the diagonals, in natural order.
        gather_in: ``(index, inverse)`` applied to ``x`` first, as in :func:`gather_last` (``index`` of length
            ``n``, −1 where the block input is zero padding; ``inverse`` of length ``n_in``, each input read at
            most once); None for none.
        permutations: ``(index, inverse)``, ``(k - 1, n)`` int64 permutations applied between blocks; None for
            none.
        gather_out: ``(index, inverse)`` applied to the last block's output, as in :func:`gather_last`
            (``index`` of length ``n_out``, ``inverse`` of length ``n`` with −1 where nothing is read); None for
            none.
        relu: apply a ReLU between blocks, after the permutation. Its gradient needs nothing more than the
            block inputs (a block input is positive exactly where the ReLU let its input through).
        recompute: save only ``x`` for backward, which recomputes the block inputs chunk by chunk; False saves
            the ``k`` block inputs instead (see ``docs/acdc.md`` for the measurements behind the default).
        offsets: None, or ``(k, n)`` in natural order: ``offsets[i]`` is added to block ``i``'s output (before
            the permutation and ReLU that follow it), inside the op. Differentiable; its gradient is the sum over
            the rows of each block output's gradient.

    Returns:
        ``(..., n_out)`` (``n_out = n`` without ``gather_out``), differentiable in ``x``, ``A``, ``D`` and
        ``offsets``.
        When a gradient is needed it saves ``x`` (``recompute``) or the ``k`` block inputs (``x`` itself for the
        first when there is no ``gather_in``), one ``(..., n)`` tensor each, and nothing else of the batch's size.
    """
    if A.dim() != 2 or D.shape != A.shape:
        raise ValueError(f"acdc_cascade expects A and D of one shape (k, n); got {tuple(A.shape)} and {tuple(D.shape)}")
    k, n = A.shape
    n_in = n if gather_in is None else gather_in[1].shape[0]
    if x.dim() == 0 or x.shape[-1] != n_in:
        raise ValueError(f"acdc_cascade expects x of shape (..., {n_in}); got {tuple(x.shape)}")
    if permutations is not None and tuple(permutations[0].shape) != (k - 1, n):
        raise ValueError(f"acdc_cascade expects permutations of shape ({k - 1}, {n}); got {tuple(permutations[0].shape)}")
    if offsets is not None and offsets.shape != A.shape:
        raise ValueError(f"acdc_cascade expects offsets of shape ({k}, {n}) like A; got {tuple(offsets.shape)}")
    differentiable = (x, A, D) if offsets is None else (x, A, D, offsets)
    keep = not recompute and torch.is_grad_enabled() and any(t.requires_grad for t in differentiable)
    gathers = [t for pair in (gather_in, permutations, gather_out) for t in (pair if pair is not None else (None, None))]
    return _cascade_op(x, A, D, offsets, *gathers, relu, keep)[0]


def gather_last(x: torch.Tensor, index: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
    """``y[..., j] = x[..., index[j]]`` (0 where ``index[j] < 0``); ``inverse`` maps the other way
    (``inverse[index[j]] = j`` where defined, −1 elsewhere) and gives the gradient. Output ``(..., len(index))``."""
    return _gather_op(x, index, inverse)
