r"""The orthonormal (and scipy-compatible) DCT-II and its inverse over the last dimension, through one real FFT of
the same length.

Makhoul's algorithm (IEEE Trans. ASSP, 1980). For ``x`` of length ``n`` let ``v = [x0, x2, x4, …, x5, x3, x1]``
(even samples in order, then odd samples reversed), ``V = rfft(v)`` and ``θ_k = πk / 2n``. Then

    X_k     = 2 f_k (cos θ_k Re V_k + sin θ_k Im V_k)      for 0 ≤ k ≤ n/2,
    X_{n-k} = 2 f_k (sin θ_k Re V_k - cos θ_k Im V_k)      for 0 < k < n - k,

where ``f_k`` is the normalization (1 for scipy's ``norm=None``). Both outputs of a bin come from the same
complex ``V_k``, so one rfft of length ``n`` gives all ``n`` outputs. The inverse runs the same steps backwards:
``V_k = e^{iθ_k} (X_k / f_k - i X_{n-k} / f_k) / 2``, ``v = irfft(V)``, then undo the reordering. The steps are
in :mod:`structlin.transforms._dct_steps`, shared with :func:`~structlin.transforms.dctn`.

The backward passes are the adjoint transforms: for ``norm="ortho"`` the DCT matrix is orthogonal, so the
gradient of :func:`dct` is :func:`idct` and vice versa; for the other normalizations the adjoint is the inverse
transform with the *dual* normalization (``f*_k = f^ortho_k² / f_k``), one transform with other twiddles.

Under ``torch.func`` transforms and forward-mode AD, :func:`dct` and :func:`idct` run the pure-PyTorch steps
instead of the custom ops, so those transforms differentiate and batch them with their own rules (see
:mod:`structlin.transforms._backend`).
"""

from __future__ import annotations

import torch

from ..costs import dct_flops, idct_flops
from . import _dct_steps as steps
from ._checks import as_computable, in_dtype_of
from ._ops import define_linear_op

__all__ = ["dct", "idct"]


def _dct_impl(x: torch.Tensor, norm: str) -> torch.Tensor:
    return steps.forward(x, [x.dim() - 1], norm)


def _idct_impl(x: torch.Tensor, norm: str) -> torch.Tensor:
    return steps.inverse(x, [x.dim() - 1], norm)


def _dct_backward(grad: torch.Tensor, norm: str) -> torch.Tensor:
    return _idct_op(grad, steps.adjoint_norm(norm))


def _idct_backward(grad: torch.Tensor, norm: str) -> torch.Tensor:
    return _dct_op(grad, steps.adjoint_norm(norm))


_dct_op = define_linear_op("dct", _dct_impl, _dct_backward, lambda n, norm: dct_flops(n))
_idct_op = define_linear_op("idct", _idct_impl, _idct_backward, lambda n, norm: idct_flops(n))


def dct(x: torch.Tensor, norm: str | None = "ortho") -> torch.Tensor:
    """DCT-II over the last dimension.

    ``X_k = 2 f_k Σ_j x_j cos(π k (2j + 1) / 2n)`` with ``f_k = 1`` for ``norm=None``/``"backward"`` (as
    ``scipy.fft.dct(x, norm=None)``), ``f_0 = 1/√(4n)``, ``f_k = 1/√(2n)`` for ``"ortho"`` (an orthogonal
    matrix), ``f_k = 1/2n`` for ``"forward"``.

    Args:
        x: ``(..., n)`` real tensor, any ``n ≥ 1``. float16/bfloat16 are computed in float32.
        norm: ``"ortho"`` (default), ``None``/``"backward"`` or ``"forward"``, as in ``scipy.fft.dct``. Note that
            scipy's (and torch-dct's) default is ``None``.

    Returns:
        ``(..., n)`` tensor of ``x``'s dtype, contiguous. Differentiable (the gradient is the adjoint transform).

    Cost: one ``rfft`` of length ``n`` and ``O(n)`` work per row (:func:`structlin.costs.dct_flops`).
    """
    norm = steps.check_norm(norm)
    computed = as_computable(x, "dct")
    return in_dtype_of(_dct_op(computed, norm), x)


def idct(x: torch.Tensor, norm: str | None = "ortho") -> torch.Tensor:
    """Inverse of :func:`dct` for the same ``norm`` (a DCT-III), over the last dimension.

    ``idct(dct(x, norm), norm) == x``, as ``scipy.fft.idct(X, norm=norm)``. For ``"ortho"`` it is also the
    transpose of :func:`dct`.

    Args:
        x: ``(..., n)`` real tensor, any ``n ≥ 1``. float16/bfloat16 are computed in float32.
        norm: ``"ortho"`` (default), ``None``/``"backward"`` or ``"forward"``.

    Returns:
        ``(..., n)`` tensor of ``x``'s dtype, contiguous. Differentiable.
    """
    norm = steps.check_norm(norm)
    computed = as_computable(x, "idct")
    return in_dtype_of(_idct_op(computed, norm), x)
