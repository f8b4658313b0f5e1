r"""The fused ACDC block and the last-dimension gather it is chained with.

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
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from .. import _native
from ..costs import acdc_block_backward_flops, acdc_block_flops
from ._backend import uses_native
from ._ops import register_flops, rows_of

__all__ = ["acdc_block", "gather_last", "bin_coefficients", "bin_trig", "makhoul_order"]


def makhoul_order(n: int) -> np.ndarray:
    """``σ`` with ``(P x)[j] = x[σ[j]]``: ``[0, 2, 4, …, 5, 3, 1]``."""
    return np.concatenate([np.arange(0, n, 2), np.arange(n - 1 - (n % 2 == 1), 0, -2)])


def bin_trig(n: int, device=None, dtype=None):
    """Constants of :func:`bin_coefficients` for size ``n``: ``(c², s², cs, mirror)``, ``(n//2 + 1,)`` each;
    ``mirror[k] = n − k`` (0 for k = 0). A layer keeps them as buffers."""
    theta = np.pi * np.arange(n // 2 + 1) / (2 * n)
    c, s = np.cos(theta), np.sin(theta)
    mirror = np.concatenate([[0], n - np.arange(1, n // 2 + 1)])
    as_tensor = functools.partial(torch.tensor, device=device)
    return as_tensor(c * c, dtype=dtype), as_tensor(s * s, dtype=dtype), as_tensor(c * s, dtype=dtype), as_tensor(mirror)


def bin_coefficients(D: torch.Tensor, trig=None):
    """Per-bin coefficients ``(m00, m01, m11)``, each ``(..., n//2 + 1)``, of ``C⁻¹ diag(D) C`` for ``D`` of
    shape ``(..., n)``. Differentiable in ``D``. ``trig`` is :func:`bin_trig`'s result (built here if omitted)."""
    n = D.shape[-1]
    c2, s2, cs, mirror = trig if trig is not None else bin_trig(n, D.device, D.dtype)
    d1 = D[..., : n // 2 + 1]
    d2 = D.index_select(-1, mirror)
    return c2 * d1 + s2 * d2, cs * (d1 - d2), s2 * d1 + c2 * d2


def _apply_bins(spectrum: torch.Tensor, m00, m01, m11) -> torch.Tensor:
    """The symmetric 2×2 map on each bin: one native pass on the CPU, else ``α V + β conj(V)`` with
    ``α = (m00 + m11)/2`` and ``β = (m00 − m11)/2 + i m01`` (three passes over contiguous complex data)."""
    if uses_native(spectrum.real) and spectrum.dim() == 2 and spectrum.is_contiguous():
        view = torch.view_as_real(spectrum)
        _native.bin_map(view, m00.contiguous(), m01.contiguous(), m11.contiguous(), view)
        return spectrum
    alpha = (m00 + m11) / 2
    beta = torch.complex((m00 - m11) / 2, m01)
    return torch.addcmul(spectrum * alpha, torch.conj_physical(spectrum), beta)


@functools.lru_cache(maxsize=64)
def _bin_weights(n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``(n//2 + 1,)`` weights of each rfft bin in the coefficient gradients: ``1/n`` at DC (and Nyquist for even
    ``n``), ``2/n`` elsewhere. Cached: only the block backward's implementation (never traced) reads it."""
    w = torch.full((n // 2 + 1,), 2.0 / n, dtype=dtype, device=device)
    w[0] = 1.0 / n
    if n % 2 == 0:
        w[-1] = 1.0 / n
    return w


def _block_impl(x: torch.Tensor, a: torch.Tensor, m00: torch.Tensor, m01: torch.Tensor, m11: torch.Tensor) -> torch.Tensor:
    if x.numel() == 0:  # some FFT backends reject empty batches
        return x.new_empty(x.shape)
    n = x.shape[-1]
    spectrum = torch.fft.rfft((x * a).reshape(-1, n))
    return torch.fft.irfft(_apply_bins(spectrum, m00, m01, m11), n=n).view(x.shape)


def _block_backward_impl(
    grad: torch.Tensor, x: torch.Tensor, a: torch.Tensor, m00: torch.Tensor, m01: torch.Tensor, m11: torch.Tensor
) -> list[torch.Tensor]:
    if x.numel() == 0:
        return [x.new_empty(x.shape)] + [torch.zeros_like(t) for t in (a, m00, m01, m11)]
    n = x.shape[-1]
    rows_x = x.reshape(-1, n)
    G = torch.fft.rfft(grad.reshape(-1, n))
    U = torch.fft.rfft(rows_x * a)
    sums = _coefficient_sums(G, U)  # before the map below, which may overwrite G
    grad_u = torch.fft.irfft(_apply_bins(G, m00, m01, m11), n=n)
    w = _bin_weights(n, a.dtype, a.device)
    grad_m00, grad_m01, grad_m11 = (w * sums[:, i] for i in range(3))
    grad_a = _column_dot(grad_u, rows_x)
    return [grad_u.mul_(a).reshape(x.shape), grad_a, grad_m00, grad_m01, grad_m11]


def _column_dot(g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``(n,)``: ``Σ_rows g ⊙ x`` for ``(rows, n)`` tensors, without a ``(rows, n)`` temporary on the native path."""
    if uses_native(x) and g.is_contiguous() and x.is_contiguous():
        n = x.shape[-1]
        return _native.ff_colsum(g.view(-1, 1, n), x, None, x.new_empty(1, n), n, 0, n).view(n)
    return (g * x).sum(0)


def _coefficient_sums(G: torch.Tensor, U: torch.Tensor) -> torch.Tensor:
    """``(m, 3)``: per bin, summed over rows, ``Σ GR UR``, ``Σ (GR UI + GI UR)``, ``Σ GI UI``."""
    if uses_native(G.real) and G.is_contiguous() and U.is_contiguous():
        return _native.bin_grad(torch.view_as_real(G), torch.view_as_real(U), G.real.new_empty(G.shape[-1], 3))
    # Σ G·U = Σ (GR UR − GI UI) + i Σ (GR UI + GI UR);  Σ G·conj(U) has real part Σ (GR UR + GI UI)
    product = (G * U).sum(0)
    product_conj = (G * torch.conj_physical(U)).sum(0).real
    return torch.stack([(product_conj + product.real) / 2, product.imag, (product_conj - product.real) / 2], dim=1)


@functools.lru_cache(maxsize=32)
def _makhoul_indices(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    order = torch.as_tensor(makhoul_order(n))
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
    if index.device.type == "cpu" and (index.numel() == 0 or index.min() >= 0):  # no padding: skip the copy
        return x.index_select(-1, index)
    padded = torch.cat([x, x.new_zeros(*x.shape[:-1], 1)], dim=-1)
    return padded.index_select(-1, torch.where(index < 0, x.shape[-1], index))


if hasattr(torch.library, "custom_op"):
    _block_op = torch.library.custom_op("structlin::acdc_block", _block_impl, mutates_args=())
    _block_backward_op = torch.library.custom_op("structlin::acdc_block_backward", _block_backward_impl, mutates_args=())
    _gather_op = torch.library.custom_op("structlin::gather_last", _gather_impl, mutates_args=())

    @_block_op.register_fake
    def _(x, a, m00, m01, m11):
        return x.new_empty(x.shape)

    @_block_backward_op.register_fake
    def _(grad, x, a, m00, m01, m11):
        return [x.new_empty(x.shape), a.new_empty(a.shape), m00.new_empty(m00.shape), m01.new_empty(m01.shape), m11.new_empty(m11.shape)]

    @_gather_op.register_fake
    def _(x, index, inverse):
        return x.new_empty(*x.shape[:-1], index.shape[0])

    def _block_setup(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    def _block_backward(ctx, grad):
        return tuple(_block_backward_op(grad, *ctx.saved_tensors))

    def _gather_setup(ctx, inputs, output):
        x, index, inverse = inputs
        ctx.save_for_backward(index, inverse)

    def _gather_backward(ctx, grad):
        index, inverse = ctx.saved_tensors
        return _gather_op(grad, inverse, index), None, None

    _block_op.register_autograd(_block_backward, setup_context=_block_setup)
    _gather_op.register_autograd(_gather_backward, setup_context=_gather_setup)
    register_flops(
        "acdc_block", lambda x_shape, *args, out_shape=None, **kw: rows_of(x_shape) * acdc_block_flops(x_shape[-1])
    )
    register_flops(
        "acdc_block_backward",
        lambda g_shape, *args, out_shape=None, **kw: rows_of(g_shape) * acdc_block_backward_flops(g_shape[-1]),
    )
else:  # torch < 2.4
    class _Block(torch.autograd.Function):
        @staticmethod
        def forward(ctx, *inputs):
            ctx.save_for_backward(*inputs)
            return _block_impl(*inputs)

        @staticmethod
        def backward(ctx, grad):
            return tuple(_block_backward_impl(grad, *ctx.saved_tensors))

    class _Gather(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, index, inverse):
            ctx.save_for_backward(index, inverse)
            return _gather_impl(x, index, inverse)

        @staticmethod
        def backward(ctx, grad):
            index, inverse = ctx.saved_tensors
            return _Gather.apply(grad, inverse, index), None, None

    _block_op, _gather_op = _Block.apply, _Gather.apply


def acdc_block(x: torch.Tensor, a: torch.Tensor, m00: torch.Tensor, m01: torch.Tensor, m11: torch.Tensor) -> torch.Tensor:
    """One ACDC block in the reordered domain: ``irfft(M ⊙ rfft(a ⊙ x))``.

    Args:
        x: ``(..., n)`` input, already in Makhoul order.
        a: ``(n,)`` the diagonal ``A`` in Makhoul order.
        m00, m01, m11: ``(n//2 + 1,)`` per-bin coefficients from :func:`bin_coefficients`.

    Returns:
        ``(..., n)``, in Makhoul order. Saves ``x`` (and the small parameters) for backward.
    """
    return _block_op(x, a, m00, m01, m11)


def gather_last(x: torch.Tensor, index: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
    """``y[..., j] = x[..., index[j]]`` (0 where ``index[j] < 0``); ``inverse`` maps the other way
    (``inverse[index[j]] = j`` where defined, −1 elsewhere) and gives the gradient. Output ``(..., len(index))``."""
    return _gather_op(x, index, inverse)
