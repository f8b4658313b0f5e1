r"""The DCT-II and its inverse over any set of dimensions: the separable product of 1-D transforms.

For dimensions ``d_1 < … < d_j`` of lengths ``n_1 … n_j``::

    X[k_1, …, k_j] = Π_i (2 f_{k_i}) · Σ_{x indices} x[m_1, …, m_j] Π_i cos(π k_i (2 m_i + 1) / 2 n_i)

with each dimension's normalization ``f`` as in :func:`~structlin.transforms.dct` (the same ``norm`` for all),
which is ``scipy.fft.dctn(x, axes=dims, norm=norm)``. On the CPU with power-of-two lengths it runs as one native
pass per dimension (reorder, real FFT and twiddles on chunks that stay in the cache); otherwise as one real n-D
FFT of the reordered input plus ``O(1)`` work per element and dimension (see
:mod:`structlin.transforms._dct_steps`). Neither makes transposed copies. When the last dimension of the tensor
is not transformed, the n-D FFT walks strided memory, which costs more than along the last.

:func:`dctn` and :func:`idctn` are the custom ops ``structlin::dctn`` and ``structlin::idctn`` (analytic backward:
the adjoint of the DCT with one normalization is the inverse DCT with its dual, see
:func:`~structlin.transforms._dct_steps.adjoint_norm`), counted by ``FlopCounterMode`` with
:func:`structlin.costs.dctn_flops`, and run their composite form under ``torch.func`` transforms.
"""

from __future__ import annotations

import math
import operator
from typing import Callable, Sequence

import torch

from ..costs import dctn_flops
from . import _dct_steps as steps
from ._backend import dispatch
from ._checks import as_computable, in_dtype_of
from ._ops import autograd_function_op, define_op, register_flops

__all__ = ["dctn", "idctn", "normalize_dims"]


def normalize_dims(ndim: int, dim, name: str) -> list[int]:
    """The dimensions a transform of an ``ndim``-dimensional tensor acts on, as increasing non-negative ints.

    ``dim``: ``None`` (all dimensions), an int, or a sequence of ints (negative ones count from the end).

    Raises:
        TypeError: ``dim`` holds something other than ints.
        IndexError: a dimension is out of range (as PyTorch's own dim arguments).
        ValueError: a dimension is named twice.
    """
    if dim is None:
        return list(range(ndim))
    items = [dim] if isinstance(dim, int) or not isinstance(dim, Sequence) else list(dim)
    dims = []
    for d in items:
        if isinstance(d, bool):
            raise TypeError(f"{name}: dim must be an int or a sequence of ints, got {dim!r}")
        try:
            d = operator.index(d)
        except TypeError:
            raise TypeError(f"{name}: dim must be an int or a sequence of ints, got {dim!r}") from None
        if not -ndim <= d < ndim:
            raise IndexError(
                f"{name}: dimension {d} is out of range for a tensor with {ndim} dimensions "
                f"(expected a value in [{-ndim}, {ndim - 1}])"
            )
        dims.append(d % ndim)
    if len(set(dims)) != len(dims):
        raise ValueError(f"{name}: dim names the same dimension more than once: {dim!r}")
    return sorted(dims)


def _flops(x_shape, dims) -> int:
    sizes = [x_shape[d] for d in dims]
    batch = math.prod(x_shape) // max(1, math.prod(sizes))
    return batch * dctn_flops(sizes) if math.prod(x_shape) else 0


def _define_op(name: str, impl: Callable, backward: Callable) -> Callable:
    """Register ``structlin::name(x, dims, norm)``, a linear map of ``x`` over ``dims``, with the analytic
    ``backward(grad, dims, norm)``, a fake kernel and its FLOP formula; return the :func:`~._backend.dispatch`
    callable: the custom op where something needs to see it (``torch.compile``, ``FlopCounterMode``), the same
    function as an ``autograd.Function`` in plain eager code (without the custom op's per-call dispatch cost),
    and the composite form under ``torch.func`` transforms."""

    def run(x: torch.Tensor, dims: list[int], norm: str) -> torch.Tensor:
        return x.new_empty(x.shape) if x.numel() == 0 else impl(x, list(dims), norm)

    function = autograd_function_op(  # dims and norm travel as one option
        name, lambda x, o: run(x, list(o[0]), o[1]), lambda g, o: backward(g, list(o[0]), o[1]))

    def eager(x, dims, norm):
        return function(x, (tuple(dims), norm))

    if not hasattr(torch.library, "custom_op"):  # torch < 2.4
        return dispatch(eager, run)

    op = define_op(name, run)

    @op.register_fake
    def _fake(x, dims, norm):
        return x.new_empty(x.shape)

    def setup_context(ctx, inputs, output):
        ctx.dims, ctx.norm = inputs[1], inputs[2]

    def backward_(ctx, grad):
        return backward(grad, ctx.dims, ctx.norm), None, None

    op.register_autograd(backward_, setup_context=setup_context)
    register_flops(name, lambda x_shape, dims, norm, *args, **kwargs: _flops(x_shape, dims))
    return dispatch(op, run, eager)


_dctn_op = _define_op("dctn", steps.forward, lambda g, dims, norm: _idctn_op(g, dims, steps.adjoint_norm(norm)))
_idctn_op = _define_op("idctn", steps.inverse, lambda g, dims, norm: _dctn_op(g, dims, steps.adjoint_norm(norm)))


def _apply(op: Callable, x: torch.Tensor, dim, norm, name: str) -> torch.Tensor:
    norm = steps.check_norm(norm)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} expects a torch.Tensor, got {type(x).__name__}")
    if x.dim() == 0:
        raise ValueError(f"{name} needs a tensor with at least 1 dimension, got a 0-d tensor")
    dims = normalize_dims(x.dim(), dim, name)
    for d in dims:
        if x.shape[d] == 0:
            raise ValueError(f"{name} needs every transformed dimension to have length >= 1, got length 0 in "
                             f"dimension {d} of shape {tuple(x.shape)}")
    # the dtype checks (and the float32 upcast of half inputs) on a view whose last dimension is transformed
    last = x.dim() - 1
    computed = as_computable(x.movedim(dims[-1], last) if dims else x.unsqueeze(-1), name)
    if not dims:  # nothing to transform: the identity, as scipy.fft.dctn(x, axes=())
        return computed.squeeze(-1).clone(memory_format=torch.contiguous_format).to(x.dtype)
    return in_dtype_of(op(computed.movedim(last, dims[-1]), dims, norm), x)


def dctn(x: torch.Tensor, dim: int | Sequence[int] | None = None, norm: str | None = "ortho") -> torch.Tensor:
    """DCT-II over the dimensions ``dim`` of ``x`` (all of them by default), as ``scipy.fft.dctn``.

    Args:
        x: real tensor; every transformed dimension has length ``≥ 1`` (any length, not only powers of two).
            float16/bfloat16 are computed in float32.
        dim: ``None`` (every dimension), an int or a sequence of ints; negative ones count from the end.
            ``dim=(-2, -1)`` is the 2-D DCT of images, ``dim=-1`` is :func:`~structlin.transforms.dct`.
        norm: ``"ortho"`` (default, an orthogonal map), ``None``/``"backward"`` or ``"forward"``, applied along
            every transformed dimension. scipy's (and torch-dct's) default is ``None``.

    Returns:
        A tensor of ``x``'s shape and dtype, contiguous. Differentiable (the gradient is the adjoint transform).

    Raises:
        IndexError: a dimension is out of range. ValueError: a dimension is repeated, a transformed dimension has
        length 0, or ``norm`` is unknown. TypeError: ``x`` is not a real floating tensor.

    Cost: one real FFT over the transformed dimensions plus ``O(1)`` per element and dimension
    (:func:`structlin.costs.dctn_flops`).
    """
    return _apply(_dctn_op, x, dim, norm, "dctn")


def idctn(x: torch.Tensor, dim: int | Sequence[int] | None = None, norm: str | None = "ortho") -> torch.Tensor:
    """Inverse of :func:`dctn` for the same ``dim`` and ``norm`` (a DCT-III along each dimension), as
    ``scipy.fft.idctn``: ``idctn(dctn(x, dim, norm), dim, norm) == x``. For ``"ortho"`` it is also the transpose of
    :func:`dctn`. Arguments, result and errors as :func:`dctn`.
    """
    return _apply(_idctn_op, x, dim, norm, "idctn")
