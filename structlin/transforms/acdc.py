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
from typing import Optional

import numpy as np
import torch

from .. import _native
from ..costs import acdc_block_backward_flops, acdc_block_flops
from ._backend import uses_native
from ._ops import register_flops, rows_of

__all__ = ["acdc_cascade", "gather_last", "bin_coefficients", "bin_trig", "makhoul_order"]


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


def _gather_scale(src: torch.Tensor, index: torch.Tensor | None, scale: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``out[r, j] = scale[j] · src[r, index[j]]`` (``src[r, j]`` when ``index`` is None) for ``(rows, n)``
    tensors; one pass on the native path."""
    if index is None:
        return torch.mul(src, scale, out=out)
    if uses_native(src) and src.is_contiguous():
        n = src.shape[-1]
        _native.ff_gather_scale(src, index.view(1, n), scale.view(1, n), out.view(-1, 1, n), n, 0, n)
        return out
    return torch.mul(src.index_select(-1, index), scale, out=out)


def _column_dot(g: torch.Tensor, x: torch.Tensor, index: torch.Tensor | None, out: torch.Tensor) -> torch.Tensor:
    """``out[j] = Σ_rows g[r, j] · x[r, index[j]]`` (``x[r, j]`` when ``index`` is None) for ``(rows, n)``
    tensors, without a ``(rows, n)`` temporary on the native path."""
    if uses_native(x) and g.is_contiguous() and x.is_contiguous():
        n = x.shape[-1]
        _native.ff_colsum(g.view(-1, 1, n), x, None if index is None else index.view(1, n), out.view(1, n), n, 0, n)
        return out
    gathered = x if index is None else x.index_select(-1, index)
    return torch.sum(g * gathered, dim=0, out=out)


def _cascade_impl(
    x: torch.Tensor,
    a: torch.Tensor,
    m00: torch.Tensor,
    m01: torch.Tensor,
    m11: torch.Tensor,
    perm_index: Optional[torch.Tensor],
    perm_inverse: Optional[torch.Tensor],
    keep: bool,
) -> list[torch.Tensor]:
    """``[y, *kept]``: the cascade's output and, when ``keep``, the ``k - 1`` block outputs backward needs."""
    k, n = a.shape
    rows_x = x.reshape(-1, n)
    rows = rows_x.shape[0]
    if rows == 0:  # some FFT backends reject empty batches
        return [x.new_empty(x.shape)] + [x.new_empty(x.shape) for _ in range(k - 1 if keep else 0)]
    kept = []
    scaled = torch.mul(rows_x, a[0])
    for i in range(k):
        y = torch.fft.irfft(_apply_bins(torch.fft.rfft(scaled), m00[i], m01[i], m11[i]), n=n)
        if i == k - 1:
            return [y.view(x.shape)] + kept
        if keep:
            kept.append(y.view(x.shape))
        _gather_scale(y, None if perm_index is None else perm_index[i], a[i + 1], out=scaled)
    raise AssertionError("unreachable")


def _cascade_backward_impl(
    grad: torch.Tensor,
    x: torch.Tensor,
    kept: list[torch.Tensor],
    a: torch.Tensor,
    m00: torch.Tensor,
    m01: torch.Tensor,
    m11: torch.Tensor,
    perm_index: Optional[torch.Tensor],
    perm_inverse: Optional[torch.Tensor],
) -> list[torch.Tensor]:
    k, n = a.shape
    if len(kept) != k - 1:
        raise RuntimeError("acdc_cascade ran with keep=False, so it saved nothing to differentiate with")
    grad_a = torch.empty_like(a)
    sums = a.new_empty(k, n // 2 + 1, 3)
    rows_x = x.reshape(-1, n)
    rows = rows_x.shape[0]
    if rows == 0:
        return [x.new_zeros(x.shape), grad_a.zero_()] + [torch.zeros_like(m) for m in (m00, m01, m11)]
    g = grad.reshape(-1, n)
    work = x.new_empty(rows, n)
    for i in reversed(range(k)):
        G = torch.fft.rfft(g)
        # block i's input v_i is x, or the previous block's output permuted: v_i[j] = y_{i-1}[π_{i-1}[j]]
        if i == 0:
            source, index = rows_x, None
        else:
            source, index = kept[i - 1].reshape(rows, n), None if perm_index is None else perm_index[i - 1]
        U = torch.fft.rfft(_gather_scale(source, index, a[i], out=work))
        _coefficient_sums(G, U, out=sums[i])  # before the map below, which overwrites G
        grad_u = torch.fft.irfft(_apply_bins(G, m00[i], m01[i], m11[i]), n=n)
        _column_dot(grad_u, source, index, out=grad_a[i])
        if index is None:
            g = grad_u.mul_(a[i])
        else:  # the gradient reaching y_{i-1}: grad_y[m] = a[ρ[m]] · grad_u[ρ[m]] with ρ = π⁻¹
            inverse = perm_inverse[i - 1]
            g = _gather_scale(grad_u, inverse, a[i].index_select(0, inverse), out=work)
            work = grad_u
    w = _bin_weights(n, a.dtype, a.device)
    grad_m00, grad_m01, grad_m11 = (w * sums[..., j] for j in range(3))
    return [g.view(x.shape), grad_a, grad_m00, grad_m01, grad_m11]


def _coefficient_sums(G: torch.Tensor, U: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``out``, ``(m, 3)``: per bin, summed over rows, ``Σ GR UR``, ``Σ (GR UI + GI UR)``, ``Σ GI UI``."""
    if uses_native(G.real) and G.is_contiguous() and U.is_contiguous():
        return _native.bin_grad(torch.view_as_real(G), torch.view_as_real(U), out)
    # Σ G·U = Σ (GR UR − GI UI) + i Σ (GR UI + GI UR);  Σ G·conj(U) has real part Σ (GR UR + GI UI)
    product = (G * U).sum(0)
    product_conj = (G * torch.conj_physical(U)).sum(0).real
    return torch.stack([(product_conj + product.real) / 2, product.imag, (product_conj - product.real) / 2], dim=1, out=out)


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
    _cascade_op = torch.library.custom_op("structlin::acdc_cascade", _cascade_impl, mutates_args=())
    _cascade_backward_op = torch.library.custom_op(
        "structlin::acdc_cascade_backward", _cascade_backward_impl, mutates_args=()
    )
    _gather_op = torch.library.custom_op("structlin::gather_last", _gather_impl, mutates_args=())

    @_cascade_op.register_fake
    def _(x, a, m00, m01, m11, perm_index, perm_inverse, keep):
        return [x.new_empty(x.shape) for _ in range(a.shape[0] if keep else 1)]

    @_cascade_backward_op.register_fake
    def _(grad, x, kept, a, m00, m01, m11, perm_index, perm_inverse):
        return [x.new_empty(x.shape), a.new_empty(a.shape), m00.new_empty(m00.shape), m01.new_empty(m01.shape), m11.new_empty(m11.shape)]

    @_gather_op.register_fake
    def _(x, index, inverse):
        return x.new_empty(*x.shape[:-1], index.shape[0])

    def _cascade_setup(ctx, inputs, output):
        x, a, m00, m01, m11, perm_index, perm_inverse, keep = inputs
        ctx.set_materialize_grads(False)  # the kept block outputs get no gradient; do not make zeros for them
        ctx.mark_non_differentiable(*output[1:])
        ctx.save_for_backward(x, a, m00, m01, m11, perm_index, perm_inverse, *output[1:])

    def _cascade_backward(ctx, grads):
        x, a, m00, m01, m11, perm_index, perm_inverse, *kept = ctx.saved_tensors
        grad = grads[0] if grads[0] is not None else torch.zeros_like(x)
        grads = _cascade_backward_op(grad, x, kept, a, m00, m01, m11, perm_index, perm_inverse)
        return *grads, None, None, None

    def _gather_setup(ctx, inputs, output):
        x, index, inverse = inputs
        ctx.save_for_backward(index, inverse)

    def _gather_backward(ctx, grad):
        index, inverse = ctx.saved_tensors
        return _gather_op(grad, inverse, index), None, None

    _cascade_op.register_autograd(_cascade_backward, setup_context=_cascade_setup)
    _gather_op.register_autograd(_gather_backward, setup_context=_gather_setup)
    register_flops(
        "acdc_cascade",
        lambda x_shape, a_shape, *args, out_shape=None, **kw: rows_of(x_shape) * a_shape[0] * acdc_block_flops(x_shape[-1]),
    )
    register_flops(
        "acdc_cascade_backward",
        lambda g_shape, x_shape, kept_shapes, a_shape, *args, out_shape=None, **kw: (
            rows_of(g_shape) * a_shape[0] * acdc_block_backward_flops(g_shape[-1])
        ),
    )
else:  # torch < 2.4
    class _Cascade(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, a, m00, m01, m11, perm_index, perm_inverse, keep):
            y, *kept = _cascade_impl(x, a, m00, m01, m11, perm_index, perm_inverse, keep)
            ctx.mark_non_differentiable(*kept)
            ctx.save_for_backward(x, a, m00, m01, m11, perm_index, perm_inverse, *kept)
            return (y, *kept)

        @staticmethod
        def backward(ctx, grad, *_grad_kept):
            x, a, m00, m01, m11, perm_index, perm_inverse, *kept = ctx.saved_tensors
            grads = _cascade_backward_impl(grad, x, kept, a, m00, m01, m11, perm_index, perm_inverse)
            return *grads, None, None, None

    class _Gather(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, index, inverse):
            ctx.save_for_backward(index, inverse)
            return _gather_impl(x, index, inverse)

        @staticmethod
        def backward(ctx, grad):
            index, inverse = ctx.saved_tensors
            return _Gather.apply(grad, inverse, index), None, None

    _cascade_op, _gather_op = _Cascade.apply, _Gather.apply


def acdc_cascade(
    x: torch.Tensor,
    a: torch.Tensor,
    m00: torch.Tensor,
    m01: torch.Tensor,
    m11: torch.Tensor,
    perm_index: torch.Tensor | None = None,
    perm_inverse: torch.Tensor | None = None,
) -> torch.Tensor:
    """``k`` ACDC blocks in the reordered domain, block ``i`` being ``irfft(M_i ⊙ rfft(a_i ⊙ v))``, with
    ``v ↦ v[..., π_i]`` between blocks ``i`` and ``i + 1`` when permutations are given.

    Args:
        x: ``(..., n)`` input, already in Makhoul order.
        a: ``(k, n)`` the diagonals ``A`` in Makhoul order.
        m00, m01, m11: ``(k, n//2 + 1)`` per-bin coefficients from :func:`bin_coefficients`.
        perm_index, perm_inverse: ``(k - 1, n)`` int64 gathers ``π_i`` in the reordered domain and their
            inverses, or None for no permutations.

    Returns:
        ``(..., n)``, in Makhoul order. When a gradient is needed it saves ``x`` and the ``k - 1`` block outputs
        that feed the next blocks (one ``(..., n)`` tensor each), nothing else of the batch's size.
    """
    keep = torch.is_grad_enabled() and any(t.requires_grad for t in (x, a, m00, m01, m11))
    return _cascade_op(x, a, m00, m01, m11, perm_index, perm_inverse, keep)[0]


def gather_last(x: torch.Tensor, index: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
    """``y[..., j] = x[..., index[j]]`` (0 where ``index[j] < 0``); ``inverse`` maps the other way
    (``inverse[index[j]] = j`` where defined, −1 elsewhere) and gives the gradient. Output ``(..., len(index))``."""
    return _gather_op(x, index, inverse)
