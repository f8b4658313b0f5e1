r"""The DCT-I and its inverse over the last dimension, with scipy's conventions (``scipy.fft.dct(x, type=1)``).

For ``x`` of length ``n ≥ 2`` and ``M = n − 1``, the unnormalized transform (scipy's ``norm=None``) is

    y_k = x_0 + (−1)^k x_M + 2 Σ_{j=1}^{M−1} x_j cos(π j k / M),      k = 0 … M,

the real part of the DFT of the even extension ``z = [x_0, …, x_M, x_{M−1}, …, x_1]`` (length ``2M``): one real
FFT of length ``2M`` and a gather. ``norm="forward"`` divides by ``2M``; ``norm="ortho"`` multiplies ``x_0`` and
``x_M`` by ``√2``, divides ``y_0`` and ``y_M`` by ``√2`` and scales by ``1/√(2M)``, which makes the matrix
orthogonal and symmetric (its own inverse). The inverse (scipy's ``idct(type=1)``) is again a DCT-I: with
``norm=None`` it is ``dct1 / 2M``.

Every variant is ``s · diag(o) T diag(i)`` with ``T`` the unnormalized transform and ``o``, ``i`` one except at
the two ends. Since ``T = C diag(w)`` with ``C`` symmetric and ``w = (1, 2, …, 2, 1)``, its transpose is
``diag(w/2) T diag(2/w)``: the adjoint of a variant is the variant with ends ``(i/2, 2o)``, which the backward pass
runs (one more DCT-I).

:func:`dct1` and :func:`idct1` both run the custom op ``structlin::dct1`` (with the matching normalization),
counted by ``FlopCounterMode`` with :func:`structlin.costs.dct1_flops`; under ``torch.func`` transforms they run its
composite form (see :mod:`structlin.transforms._backend`).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .. import _native
from ..costs import dct1_flops
from ._backend import constant_cache, uses_native
from ._checks import as_computable, in_dtype_of
from ._dct_steps import adjoint_norm, check_norm
from ._ops import define_linear_op

__all__ = ["dct1", "idct1"]

#: idct1 with one normalization is dct1 with another
_INVERSE = {"backward": "forward", "forward": "backward", "ortho": "ortho"}


def _ends(n: int, norm: str) -> tuple[float, float, float]:
    """``(o, i, s)``: the transform is ``s · diag(o, 1, …, 1, o) · T · diag(i, 1, …, 1, i)``."""
    m = n - 1
    out_end, in_end, scale = {
        "backward": (1.0, 1.0, 1.0),
        "forward": (1.0, 1.0, 1.0 / (2 * m)),
        "ortho": (1 / math.sqrt(2), math.sqrt(2), 1 / math.sqrt(2 * m)),
    }[norm.removeprefix("dual-")]
    if norm.startswith("dual-"):  # the adjoint (see the module docstring)
        out_end, in_end = in_end / 2, 2 * out_end
    return out_end, in_end, scale


@constant_cache(maxsize=64)
def _mirror_index(n: int, device: torch.device) -> torch.Tensor:
    """``[0, 1, …, n−1, n−2, …, 1]``: the even extension, length ``2(n − 1)``."""
    return torch.as_tensor(np.concatenate([np.arange(n), np.arange(n - 2, 0, -1)]), dtype=torch.int64, device=device)


@constant_cache(maxsize=128)
def _output_weights(n: int, edge: float, scale: float, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``scale · (edge, 1, …, 1, edge)``, length ``n``."""
    w = np.full(n, scale)
    w[[0, -1]] *= edge
    return torch.as_tensor(w, dtype=dtype, device=device)


def _even_extension(x: torch.Tensor) -> torch.Tensor:
    """``[x_0, …, x_M, x_{M−1}, …, x_1]`` along the last dimension: a new tensor (one native gather pass on the
    CPU)."""
    n = x.shape[-1]
    index = _mirror_index(n, x.device)
    if not uses_native(x):
        return x.index_select(-1, index)
    rows = x.reshape(-1, n).contiguous()
    z = _native.gather(rows, index, rows.new_empty(rows.shape[0], index.shape[0]))
    return z.view(*x.shape[:-1], index.shape[0])


def _dct1_impl(x: torch.Tensor, norm: str) -> torch.Tensor:
    n = x.shape[-1]
    out_end, in_end, scale = _ends(n, norm)
    z = _even_extension(x)
    if in_end != 1:
        z[..., :: n - 1].mul_(in_end)  # its entries 0 and n - 1: x_0 and x_{n-1}
    real = torch.view_as_real(torch.fft.rfft(z))[..., 0]
    return (real * _output_weights(n, out_end, scale, x.device, x.dtype)).contiguous()


def _dct1_backward(grad: torch.Tensor, norm: str) -> torch.Tensor:
    return _dct1_op(grad, adjoint_norm(norm))


_dct1_op = define_linear_op("dct1", _dct1_impl, _dct1_backward, lambda n, norm: dct1_flops(n, _ends(n, norm)[1] != 1))


def _run(x: torch.Tensor, norm: str, name: str) -> torch.Tensor:
    computed = as_computable(x, name)
    if x.shape[-1] < 2:
        raise ValueError(f"{name} needs a last dimension of length >= 2 (the DCT-I of length n divides by n - 1), "
                         f"got shape {tuple(x.shape)}")
    return in_dtype_of(_dct1_op(computed, norm), x)


def dct1(x: torch.Tensor, norm: str | None = "ortho") -> torch.Tensor:
    """DCT-I over the last dimension, as ``scipy.fft.dct(x, type=1, norm=norm)``.

    ``y_k = f · (x_0 + (−1)^k x_{n−1} + 2 Σ_{j=1}^{n−2} x_j cos(π j k / (n − 1)))`` with ``f = 1`` for
    ``norm=None``/``"backward"`` and ``1/(2(n − 1))`` for ``"forward"``; ``"ortho"`` (the default) weights the end
    points as scipy does so that the matrix is orthogonal and symmetric: ``dct1(dct1(x)) == x``.

    Args:
        x: ``(..., n)`` real tensor, ``n ≥ 2``. float16/bfloat16 are computed in float32.
        norm: ``"ortho"`` (default), ``None``/``"backward"`` or ``"forward"``. scipy's (and torch-dct's) default
            is ``None``.

    Returns:
        ``(..., n)`` tensor of ``x``'s dtype, contiguous. Differentiable (the gradient is the adjoint DCT-I).

    Raises:
        ValueError: ``n < 2`` or an unknown ``norm``. TypeError: ``x`` is not a real floating tensor.

    Cost: one ``rfft`` of length ``2(n − 1)`` and ``O(n)`` work per row (:func:`structlin.costs.dct1_flops`).
    """
    return _run(x, check_norm(norm), "dct1")


def idct1(x: torch.Tensor, norm: str | None = "ortho") -> torch.Tensor:
    """Inverse of :func:`dct1` for the same ``norm``, as ``scipy.fft.idct(x, type=1, norm=norm)``: itself a DCT-I,
    scaled by ``1/(2(n − 1))`` for ``norm=None``, unscaled for ``"forward"``, and equal to :func:`dct1` for
    ``"ortho"``. Arguments, result and errors as :func:`dct1`.
    """
    return _run(x, _INVERSE[check_norm(norm)], "idct1")
