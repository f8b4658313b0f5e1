r"""The fused Fastfood op: stacked blocks ``y_j = S_j H̃ G_j Π_j H̃ B_j x`` in one custom op with an analytic backward.

``H̃ = H_d/√d`` is the orthonormal Walsh–Hadamard matrix (Sylvester order), ``Π_j`` the permutation
``(Π_j v)[k] = v[perm[j, k]]``, ``B_j``, ``G_j``, ``S_j`` diagonals (rows of ``(blocks, d)`` tensors). The input
``(rows, n_in)``, ``n_in ≤ d``, is zero-padded to ``d``; block ``j`` gives outputs ``j·d … j·d + d − 1`` and the
stacked output is truncated to ``out_features``. Both ``1/√d`` are folded into ``G``
(``H̃ G Π H̃ = H (G/d) Π H``), so the transforms run unnormalized. Per block the forward is four passes:

1. ``u = H (B ⊙ pad(x))`` — one pass writes the scaled, padded, broadcast input; the FWHT runs in place;
2. ``w = H ((G/d) ⊙ Π u)`` — one pass gathers and scales (the permutation and the diagonal fused); FWHT in place;
3. ``y = S ⊙ w + bias`` — one pass, truncated to ``out_features`` (in place when nothing is truncated).

Only ``x`` (and the small parameters) is saved; the backward recomputes ``u`` and ``w`` where a gradient needs
them (one FWHT each), then with ``g₁ = H (S ⊙ g)`` and ``g₀ = H Πᵀ ((G/d) ⊙ g₁)``::

    grad S = Σ_rows g ⊙ w        grad G = Σ_rows g₁ ⊙ Π u / d        grad B = Σ_rows g₀ ⊙ x
    grad x = Σ_blocks B ⊙ g₀     grad bias = Σ_rows g

On the CPU (float32/float64) the passes are native kernels (``structlin._native``: ``ff_gather_scale``,
``ff_scale_sum``, ``ff_colsum`` and the in-place FWHT); elsewhere the same steps run as PyTorch ops with the
FWHT's Kronecker split. Any strides are accepted (the kernels get contiguous copies of what is not). FLOP
counts: :func:`structlin.costs.fastfood_flops` and :func:`~structlin.costs.fastfood_backward_flops`.

Under ``torch.func`` transforms and forward-mode AD, :func:`fastfood` (and the backward, when it runs under one)
calls the implementation directly instead of the custom op; it then takes the PyTorch path, whose ops those
transforms differentiate and batch by their own rules (see :mod:`structlin.transforms._backend`).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from .. import _native
from ..costs import fastfood_backward_flops, fastfood_flops
from ._backend import dispatch, uses_native
from ._ops import define_op, register_flops
from .hadamard import _fwht_kronecker

__all__ = ["fastfood"]


def _fold(G: torch.Tensor) -> torch.Tensor:
    """``G/d``: the two ``1/√d`` of the orthonormal transforms."""
    return G * (1.0 / G.shape[-1])


def _pad_last(t: torch.Tensor, size: int) -> torch.Tensor:
    """``t`` zero-padded to ``size`` along the last dim (``t`` itself when no padding is needed: a zero-width pad
    is an alias, which the vmap of ``is_grads_batched`` cannot batch)."""
    return t if t.shape[-1] == size else F.pad(t, (0, size - t.shape[-1]))


def _truncate_last(t: torch.Tensor, size: int) -> torch.Tensor:
    """The first ``size`` entries of ``t``'s last dim (``t`` itself when that is all: see :func:`_pad_last`)."""
    return t if t.shape[-1] == size else t[..., :size]


def _fwht(u: torch.Tensor, native: bool) -> torch.Tensor:
    """Unnormalized FWHT over the last dim of a contiguous ``(rows, blocks, d)`` tensor (in place when native)."""
    if native:
        _native.fwht_(u.view(-1, u.shape[-1]), 1.0)
        return u
    return _fwht_kronecker(u, False)


def _expand(x: torch.Tensor, B: torch.Tensor, native: bool) -> torch.Tensor:
    """``(rows, n_in)`` → ``(rows, blocks, d)``: ``B_j ⊙ pad(x)`` for every block."""
    rows, n_in = x.shape
    blocks, d = B.shape
    if native:
        return _native.ff_gather_scale(x, None, B, x.new_empty(rows, blocks, d), n_in, 0, n_in)
    scaled = x.unsqueeze(1) * B[:, :n_in]
    return _pad_last(scaled, d)


def _permute_scale(u: torch.Tensor, index: torch.Tensor, D: torch.Tensor, native: bool) -> torch.Tensor:
    """``out[r, j, k] = D[j, k] · u[r, j, index[j, k]]``."""
    rows, blocks, d = u.shape
    if native:
        return _native.ff_gather_scale(u, index, D, torch.empty_like(u), blocks * d, d, d)
    return torch.gather(u, 2, index.expand(rows, blocks, d)) * D


def _output(w: torch.Tensor, S: torch.Tensor, bias: Optional[torch.Tensor], out_features: int, native: bool):
    """``(rows, blocks, d)`` → ``(rows, out_features)``: ``S ⊙ w`` (+ bias), the stacked blocks truncated."""
    rows, blocks, d = w.shape
    flat, scale = w.view(rows, blocks * d), S.reshape(-1)
    if native:
        out = flat if out_features == blocks * d else w.new_empty(rows, out_features)
        return _native.ff_scale_sum(flat, scale, bias, out, 1, blocks * d, blocks * d, out_features)
    kept, scale = flat[:, :out_features], scale[:out_features]
    return torch.addcmul(bias, kept, scale) if bias is not None else kept * scale


def _scale_pad(g: torch.Tensor, S: torch.Tensor, native: bool) -> torch.Tensor:
    """``(rows, out)`` → ``(rows, blocks, d)``: ``S ⊙ pad(g)``."""
    rows, out = g.shape
    blocks, d = S.shape
    if native:
        padded = g.new_empty(rows, blocks * d)
        _native.ff_scale_sum(g, S.reshape(-1), None, padded, 1, blocks * d, out, out)
    else:
        padded = _pad_last(g * S.reshape(-1)[:out], blocks * d)
    return padded.view(rows, blocks, d)


def _block_sum(g0: torch.Tensor, B: torch.Tensor, n_in: int, native: bool) -> torch.Tensor:
    """``(rows, blocks, d)`` → ``(rows, n_in)``: ``Σ_j B_j ⊙ g0_j``, truncated to ``n_in``."""
    rows, blocks, d = g0.shape
    if native:
        return _native.ff_scale_sum(g0.view(rows, blocks * d), B, None, g0.new_empty(rows, n_in), blocks, d, blocks * d, n_in)
    return (_truncate_last(g0, n_in) * B[:, :n_in]).sum(1)


def _grad_S(g: torch.Tensor, w: torch.Tensor, native: bool) -> torch.Tensor:
    """``(blocks, d)``: ``Σ_rows pad(g) ⊙ w``."""
    rows, blocks, d = w.shape
    out = g.shape[1]
    if native:
        return _native.ff_colsum(w, g, None, w.new_empty(blocks, d), out, d, out)
    return _pad_last((w.view(rows, blocks * d)[:, :out] * g).sum(0), blocks * d).view(blocks, d)


def _grad_G(g1: torch.Tensor, u: torch.Tensor, perm: torch.Tensor, native: bool) -> torch.Tensor:
    """``(blocks, d)``: ``Σ_rows g1 ⊙ Π u / d``."""
    rows, blocks, d = u.shape
    if native:
        acc = _native.ff_colsum(g1, u, perm, u.new_empty(blocks, d), blocks * d, d, d)
    else:
        acc = (g1 * torch.gather(u, 2, perm.expand(rows, blocks, d))).sum(0)
    return _fold(acc)


def _grad_B(g0: torch.Tensor, x: torch.Tensor, native: bool) -> torch.Tensor:
    """``(blocks, d)``: ``Σ_rows g0 ⊙ pad(x)``."""
    rows, blocks, d = g0.shape
    n_in = x.shape[1]
    if native:
        return _native.ff_colsum(g0, x, None, g0.new_empty(blocks, d), n_in, 0, n_in)
    return _pad_last((_truncate_last(g0, n_in) * x.unsqueeze(1)).sum(0), d)


def _contiguous(*tensors: Optional[torch.Tensor]) -> list[Optional[torch.Tensor]]:
    """The native kernels read dense row-major memory: contiguous copies of the tensors that are not."""
    return [t if t is None else t.contiguous() for t in tensors]


def _forward_impl(
    x: torch.Tensor,
    B: torch.Tensor,
    G: torch.Tensor,
    S: torch.Tensor,
    bias: Optional[torch.Tensor],
    perm: torch.Tensor,
    inverse: torch.Tensor,
    out_features: int,
) -> torch.Tensor:
    if x.shape[0] == 0:
        return x.new_empty(0, out_features)
    native = uses_native(x)
    x, B, G, S, bias, perm = _contiguous(x, B, G, S, bias, perm)
    u = _fwht(_expand(x, B, native), native)
    w = _fwht(_permute_scale(u, perm, _fold(G), native), native)
    return _output(w, S, bias, out_features, native)


def _backward_impl(
    grad: torch.Tensor,
    x: torch.Tensor,
    B: torch.Tensor,
    G: torch.Tensor,
    S: torch.Tensor,
    perm: torch.Tensor,
    inverse: torch.Tensor,
    needs: list[bool],
) -> list[torch.Tensor]:
    need_x, need_b, need_g, need_s, need_bias = needs
    if x.shape[0] == 0:
        zeros = [torch.zeros_like(x), torch.zeros_like(B), torch.zeros_like(G), torch.zeros_like(S), grad.new_zeros(grad.shape[1])]
        return [z if need else x.new_empty(0) for z, need in zip(zeros, needs)]
    native = uses_native(x)
    grad, x, B, G, S, perm, inverse = _contiguous(grad, x, B, G, S, perm, inverse)
    grad_x, grad_B, grad_G, grad_S, grad_bias = (x.new_empty(0) for _ in range(5))  # outputs may not alias
    folded = _fold(G)
    if need_g or need_s:
        u = _fwht(_expand(x, B, native), native)
    if need_s:
        grad_S = _grad_S(grad, _fwht(_permute_scale(u, perm, folded, native), native), native)
    if need_x or need_b or need_g:
        g1 = _fwht(_scale_pad(grad, S, native), native)
        if need_g:
            grad_G = _grad_G(g1, u, perm, native)
        if need_x or need_b:
            g0 = _fwht(_permute_scale(g1, inverse, torch.gather(folded, 1, inverse), native), native)
            if need_b:
                grad_B = _grad_B(g0, x, native)
            if need_x:
                grad_x = _block_sum(g0, B, x.shape[1], native)
    if need_bias:
        grad_bias = grad.sum(0)
    return [grad_x, grad_B, grad_G, grad_S, grad_bias]


def _backward_shapes(grad, x, B, G, S, needs):
    shapes = [x.shape, B.shape, G.shape, S.shape, (grad.shape[1],)]
    return [x.new_empty(shape if need else (0,)) for shape, need in zip(shapes, needs)]


def _needs(needs_input_grad, has_bias: bool) -> list[bool]:
    x, B, G, S, bias = needs_input_grad[:5]
    return [bool(x), bool(B), bool(G), bool(S), bool(bias) and has_bias]


def _as_gradients(grads, needs):
    return tuple(g if need else None for g, need in zip(grads, needs)) + (None, None, None)


def _save(ctx, inputs) -> None:
    """Keep ``x``, the diagonals and the permutations for backward (nothing else of the batch's size)."""
    x, B, G, S, bias, perm, inverse, out_features = inputs
    ctx.save_for_backward(x, B, G, S, perm, inverse)
    ctx.has_bias = bias is not None


def _gradients(ctx, grad):
    needs = _needs(ctx.needs_input_grad, ctx.has_bias)
    return _as_gradients(_backward_op(grad, *ctx.saved_tensors, needs), needs)


class _Fastfood(torch.autograd.Function):
    """The fused op as an ``autograd.Function``: the op itself on torch < 2.4, and its eager route elsewhere."""

    @staticmethod
    def forward(ctx, *inputs):
        _save(ctx, inputs)
        return _forward_impl(*inputs)

    backward = staticmethod(_gradients)


if hasattr(torch.library, "custom_op"):
    _forward_custom = define_op("fastfood", _forward_impl)
    _backward_custom = define_op("fastfood_backward", _backward_impl)

    @_forward_custom.register_fake
    def _(x, B, G, S, bias, perm, inverse, out_features):
        return x.new_empty(x.shape[0], out_features)

    @_backward_custom.register_fake
    def _(grad, x, B, G, S, perm, inverse, needs):
        return _backward_shapes(grad, x, B, G, S, needs)

    _forward_custom.register_autograd(_gradients, setup_context=lambda ctx, inputs, output: _save(ctx, inputs))
    register_flops(
        "fastfood",
        lambda x_shape, b_shape, g_shape, s_shape, bias_shape, perm_shape, inv_shape, out_features, *args, out_shape=None, **kw: (
            fastfood_flops(x_shape[0], x_shape[1], b_shape[1], b_shape[0], out_features, bias_shape is not None)
        ),
    )
    register_flops(
        "fastfood_backward",
        lambda grad_shape, x_shape, b_shape, g_shape, s_shape, perm_shape, inv_shape, needs, *args, out_shape=None, **kw: (
            fastfood_backward_flops(x_shape[0], x_shape[1], b_shape[1], b_shape[0], grad_shape[1], tuple(needs))
        ),
    )
else:  # torch < 2.4
    _forward_custom, _backward_custom = _Fastfood.apply, _backward_impl


def _backward_eager(*args):
    """The backward op's eager route: its implementation, except when a graph of the backward is asked for
    (``create_graph=True``), where the custom op runs and autograd reports that it has no derivative."""
    return _backward_custom(*args) if torch.is_grad_enabled() else _backward_impl(*args)


_forward_op = dispatch(_forward_custom, _forward_impl, _Fastfood.apply)
_backward_op = dispatch(_backward_custom, _backward_impl, _backward_eager)


def fastfood(
    x: torch.Tensor,
    B: torch.Tensor,
    G: torch.Tensor,
    S: torch.Tensor,
    bias: Optional[torch.Tensor],
    perm: torch.Tensor,
    inverse: torch.Tensor,
    out_features: int,
) -> torch.Tensor:
    """Stacked Fastfood blocks ``y = [S_j H̃ G_j Π_j H̃ B_j pad(x)]_j[:out_features] + bias``.

    Args:
        x: ``(rows, n_in)`` with ``n_in ≤ d``, float32 or float64 (the dtype of the diagonals).
        B, G, S: ``(blocks, d)`` diagonals, ``d`` a power of two.
        bias: ``(out_features,)`` or ``None``.
        perm: ``(blocks, d)`` int64, each row a permutation of ``0 … d−1``; ``inverse`` its row-wise inverse.
        out_features: ``≤ blocks · d``.

    Returns:
        ``(rows, out_features)``. Differentiable in ``x``, ``B``, ``G``, ``S`` and ``bias``; saves only ``x`` and
        the parameters for backward.
    """
    return _forward_op(x, B, G, S, bias, perm, inverse, out_features)
