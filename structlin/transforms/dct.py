r"""The orthonormal (and scipy-compatible) DCT-II and its inverse, through one real FFT of the same length.

Makhoul's algorithm (IEEE Trans. ASSP, 1980). For ``x`` of length ``n`` let ``v = [x0, x2, x4, …, x5, x3, x1]``
(even samples in order, then odd samples reversed), ``V = rfft(v)`` and ``θ_k = πk / 2n``. Then

    X_k     = 2 f_k (cos θ_k Re V_k + sin θ_k Im V_k)      for 0 ≤ k ≤ n/2,
    X_{n-k} = 2 f_k (sin θ_k Re V_k - cos θ_k Im V_k)      for 0 < k < n - k,

where ``f_k`` is the normalization (1 for scipy's ``norm=None``). Both outputs of a bin come from the same
complex ``V_k``, so one rfft of length ``n`` gives all ``n`` outputs. The inverse runs the same steps backwards:
``V_k = e^{iθ_k} (X_k / f_k - i X_{n-k} / f_k) / 2``, ``v = irfft(V)``, then undo the reordering.

Under ``torch.func`` transforms and forward-mode AD, :func:`dct` and :func:`idct` run the pure-PyTorch steps
(``_dct_torch``, ``_idct_torch``) instead of the custom ops, so those transforms differentiate and batch them
with their own rules (see :mod:`structlin.transforms._backend`).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .. import _native
from ..costs import dct_flops, idct_flops
from ._backend import constant_cache, uses_native
from ._checks import as_computable
from ._ops import define_linear_op

__all__ = ["dct", "idct"]

_NORMS = {None: "backward", "backward": "backward", "ortho": "ortho", "forward": "forward"}


def _check_norm(norm) -> str:
    try:
        return _NORMS[norm]
    except (KeyError, TypeError):
        raise ValueError(f"norm must be one of None, 'backward', 'ortho' or 'forward', got {norm!r}") from None


def _norm_factors(n: int, norm: str) -> np.ndarray:
    """``f_k``, k = 0..n//2: the scale of DCT-II output k relative to ``2 Σ x_j cos(πk(2j+1)/2n)``."""
    m = n // 2 + 1
    if norm == "backward":
        return np.ones(m)
    if norm == "forward":
        return np.full(m, 1.0 / (2 * n))
    f = np.full(m, math.sqrt(1.0 / (2 * n)))
    f[0] = math.sqrt(1.0 / (4 * n))
    return f


@constant_cache(maxsize=128)
def _twiddles(direction: str, n: int, norm: str, device: torch.device, dtype: torch.dtype):
    """Per-bin coefficients ``(a, b)``, each of length ``n//2 + 1``, for the forward pass after the rfft
    (``direction="dct"``) or the inverse pass before the irfft (``"idct"``). Computed in float64, cached."""
    theta = np.pi * np.arange(n // 2 + 1) / (2 * n)
    f = _norm_factors(n, norm)
    scale = 2 * f if direction == "dct" else 1 / (2 * f)
    return tuple(torch.as_tensor(scale * t, dtype=dtype, device=device) for t in (np.cos(theta), np.sin(theta)))


def _ortho_ratio(n: int, norm: str) -> tuple[float, float]:
    """``(r_0, r_k)`` with ``DCT_norm = diag(r) · DCT_ortho``, ``r = (r_0, r_k, r_k, …)`` (``f_{n-k} = f_k``)."""
    f, f_ortho = _norm_factors(n, norm), _norm_factors(n, "ortho")
    return f[0] / f_ortho[0], (f[1] / f_ortho[1] if n > 1 else 1.0)


def _scale_rows(t: torch.Tensor, first: float, rest: float) -> torch.Tensor:
    """``t`` times ``(first, rest, rest, …)`` along the last dimension, with Python scalars only (this runs
    inside traced backward graphs, where a cached constant tensor would leak out of the trace)."""
    return torch.cat([t[..., :1] * first, t[..., 1:] * rest], dim=-1)


def _dct_torch(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    n = x.shape[-1]
    m = n // 2 + 1
    v = torch.cat([x[..., ::2], x[..., 1::2].flip(-1)], dim=-1)
    spectrum = torch.view_as_real(torch.fft.rfft(v))
    re, im = spectrum[..., 0], spectrum[..., 1]
    head = a * re + b * im
    tail = (b * re - a * im)[..., 1 : n - m + 1].flip(-1)
    return torch.cat([head, tail], dim=-1)


def _idct_torch(X: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    n = X.shape[-1]
    m = n // 2 + 1
    head = X[..., :m]
    mirrored = torch.cat([torch.zeros_like(X[..., :1]), X[..., n - m + 1 :].flip(-1)], dim=-1)
    v = torch.fft.irfft(torch.complex(a * head + b * mirrored, b * head - a * mirrored), n=n)
    x = torch.empty_like(v)
    evens = (n + 1) // 2
    x[..., ::2] = v[..., :evens]
    x[..., 1::2] = v[..., evens:].flip(-1)
    return x


def _dct_native(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    rows = x.reshape(-1, x.shape[-1]).contiguous()
    v = torch.empty_like(rows)
    _native.dct_reorder(rows, v)
    spectrum = torch.view_as_real(torch.fft.rfft(v))
    _native.dct_post(spectrum, a, b, v)  # v is free once transformed: reuse it for the output
    return v.view(x.shape)


def _idct_native(X: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    n = X.shape[-1]
    rows = X.reshape(-1, n).contiguous()
    spectrum = rows.new_empty(rows.shape[0], n // 2 + 1, 2)
    _native.idct_pre(rows, a, b, spectrum)
    v = torch.fft.irfft(torch.view_as_complex(spectrum), n=n)
    out = torch.empty_like(v)
    _native.dct_unreorder(v, out)
    return out.view(X.shape)


def _dct_impl(x: torch.Tensor, norm: str) -> torch.Tensor:
    a, b = _twiddles("dct", x.shape[-1], norm, x.device, x.dtype)
    return _dct_native(x, a, b) if uses_native(x) else _dct_torch(x, a, b)


def _idct_impl(x: torch.Tensor, norm: str) -> torch.Tensor:
    a, b = _twiddles("idct", x.shape[-1], norm, x.device, x.dtype)
    return _idct_native(x, a, b) if uses_native(x) else _idct_torch(x, a, b)


# The adjoints: DCT_norm = diag(r) · C with C orthogonal, so DCT_normᵀ = C⁻¹ diag(r) and DCT_norm⁻ᵀ = diag(1/r) C.
def _dct_backward(grad: torch.Tensor, norm: str) -> torch.Tensor:
    if norm != "ortho":
        grad = _scale_rows(grad, *_ortho_ratio(grad.shape[-1], norm))
    return _idct_op(grad, "ortho")


def _idct_backward(grad: torch.Tensor, norm: str) -> torch.Tensor:
    out = _dct_op(grad, "ortho")
    if norm != "ortho":
        first, rest = _ortho_ratio(grad.shape[-1], norm)
        out = _scale_rows(out, 1 / first, 1 / rest)
    return out


_dct_op = define_linear_op("dct", _dct_impl, _dct_backward, lambda n, norm: dct_flops(n))
_idct_op = define_linear_op("idct", _idct_impl, _idct_backward, lambda n, norm: idct_flops(n))


def dct(x: torch.Tensor, norm: str | None = "ortho") -> torch.Tensor:
    """DCT-II over the last dimension.

    ``X_k = 2 f_k Σ_j x_j cos(π k (2j + 1) / 2n)`` with ``f_k = 1`` for ``norm=None``/``"backward"`` (as
    ``scipy.fft.dct(x, norm=None)``), ``f_0 = 1/√(4n)``, ``f_k = 1/√(2n)`` for ``"ortho"`` (an orthogonal
    matrix), ``f_k = 1/2n`` for ``"forward"``.

    Args:
        x: ``(..., n)`` real tensor, any ``n ≥ 1``. float16/bfloat16 are computed in float32.
        norm: ``"ortho"`` (default), ``None``/``"backward"`` or ``"forward"``, as in ``scipy.fft.dct``.

    Returns:
        ``(..., n)`` tensor of ``x``'s dtype, contiguous. Differentiable (the gradient is the adjoint transform).

    Cost: one ``rfft`` of length ``n`` and ``O(n)`` work per row (:func:`structlin.costs.dct_flops`).
    """
    norm = _check_norm(norm)
    computed = as_computable(x, "dct")
    return _dct_op(computed, norm).to(x.dtype)


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
    norm = _check_norm(norm)
    computed = as_computable(x, "idct")
    return _idct_op(computed, norm).to(x.dtype)
