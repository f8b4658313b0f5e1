r"""The steps of the DCT-II and its inverse (DCT-III) over any set of dimensions, shared by :mod:`.dct` (one
dimension) and :mod:`.dctn` (several).

One dimension of length ``n`` (Makhoul, IEEE Trans. ASSP, 1980): reorder ``v = [x0, x2, x4, …, x5, x3, x1]``
(:func:`reorder`), take ``V = rfft(v)`` and, with ``θ_k = πk / 2n`` and the normalization ``f_k``,

    X_k     = 2 f_k (cos θ_k Re V_k + sin θ_k Im V_k)      for 0 ≤ k ≤ n/2,
    X_{n-k} = 2 f_k (sin θ_k Re V_k - cos θ_k Im V_k)      for 0 < k < n - k      (:func:`post`),

so both outputs of a bin come from one complex ``V_k``. Equivalently ``X_k = f_k (ω_k V_k + ω̄_k V_{−k})`` for every
``k`` with ``ω_k = e^{−iθ_k}`` (``V_{−k} = conj V_k`` for a real ``v``).

Several dimensions ``d_1 < … < d_j``: the separable product equals one real FFT over all of them. Reorder along
each, ``V = rfftn(v)`` (the last of them, ``d_j``, keeps half of its bins), then for every other ``d_i`` apply the
complex-linear map ``Z_k ↦ f_k (ω_k Z_k + ω̄_k Z_{−k})`` along ``d_i`` (:func:`pair_map`), which is the 1-D post
step written so that it also holds for complex data. What is left, ``W``, is the rfft along ``d_j`` of a real array
(the DCT over the other dimensions), so the last step is the 1-D :func:`post` along ``d_j``. There is no transposed
copy: the n-D FFT walks the other dimensions itself. The inverse runs the same steps backwards (:func:`pre`, the
inverse pair maps, ``irfftn``, :func:`unreorder`).

Each step runs a native CPU kernel where one exists for it (the reorder and the post/pre twiddles along the last
dimension, float32/float64), and otherwise differentiable PyTorch ops; the latter is the composite form that
``torch.func`` transforms see (see :mod:`structlin.transforms._backend`). Where every transformed length is a power
of two the native pass takes (:func:`_fusable`), the three steps along each dimension are one native pass instead
(:func:`_fused`: the reorder, the native kernels' own real FFT and the twiddles on chunks that stay in the cache),
dimension after dimension.

Normalizations: ``"backward"`` (``f_k = 1``, scipy's ``norm=None``), ``"ortho"``, ``"forward"``, and for each a
*dual* (``f*_k = f^ortho_k² / f_k``) such that the transpose of the DCT with one is the inverse DCT with the other:
the DCT with ``f`` is ``diag(f / f^ortho) C`` with ``C`` orthogonal, so its transpose ``Cᵀ diag(f / f^ortho)`` is
``(diag(f^ortho / f) C)⁻¹``. The backward passes use it (:func:`adjoint_norm`).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .. import _native
from ._backend import constant_cache, uses_native
from ._native_fft import fft_tables

__all__ = ["NORMS", "check_norm", "adjoint_norm", "twiddles", "reorder", "unreorder", "post", "pre", "pair_map",
           "forward", "inverse"]

#: the normalizations a user may name, and what each is called inside
NORMS = {None: "backward", "backward": "backward", "ortho": "ortho", "forward": "forward"}
_ADJOINT = {"backward": "dual-backward", "forward": "dual-forward", "ortho": "ortho"}
_ADJOINT.update({v: k for k, v in _ADJOINT.items()})


def check_norm(norm, name: str = "norm") -> str:
    """The internal name of a user's ``norm``, or a ``ValueError`` listing the valid ones."""
    try:
        return NORMS[norm]
    except (KeyError, TypeError):
        raise ValueError(f"{name} must be one of None, 'backward', 'ortho' or 'forward', got {norm!r}") from None


def adjoint_norm(norm: str) -> str:
    """The normalization ``a`` with ``DCT_normᵀ = IDCT_a`` and ``IDCT_normᵀ = DCT_a`` (``"ortho"`` is its own)."""
    return _ADJOINT[norm]


def _norm_factors(n: int, norm: str) -> np.ndarray:
    """``f_k`` for ``k = 0 … n//2`` (``f_{n-k} = f_k``): output ``k`` is ``f_k · 2 Σ_j x_j cos(πk(2j+1)/2n)``."""
    m = n // 2 + 1
    ortho = np.full(m, math.sqrt(1.0 / (2 * n)))
    ortho[0] = math.sqrt(1.0 / (4 * n))
    base = norm.removeprefix("dual-")
    f = {"backward": np.ones(m), "forward": np.full(m, 1.0 / (2 * n)), "ortho": ortho}[base]
    return ortho * ortho / f if norm.startswith("dual-") else f


def _full_factors(n: int, norm: str) -> np.ndarray:
    """``f_k`` for every ``k = 0 … n-1``."""
    f = _norm_factors(n, norm)
    return np.concatenate([f, f[1 : n - n // 2][::-1]])


def _complex(dtype: torch.dtype) -> torch.dtype:
    return torch.complex128 if dtype == torch.float64 else torch.complex64


@constant_cache(maxsize=128)
def twiddles(direction: str, n: int, norm: str, device: torch.device, dtype: torch.dtype):
    """Per-bin coefficients ``(a, b)``, each ``(n//2 + 1,)``, of :func:`post` (``direction="dct"``:
    ``a = 2f cos θ``, ``b = 2f sin θ``) or :func:`pre` (``"idct"``: ``a = cos θ / 2f``, ``b = sin θ / 2f``).
    Computed in float64, cached."""
    theta = np.pi * np.arange(n // 2 + 1) / (2 * n)
    f = _norm_factors(n, norm)
    scale = 2 * f if direction == "dct" else 1 / (2 * f)
    return tuple(torch.as_tensor(scale * t, dtype=dtype, device=device) for t in (np.cos(theta), np.sin(theta)))


@constant_cache(maxsize=128)
def _pair_coefficients(direction: str, n: int, norm: str, device: torch.device, dtype: torch.dtype):
    """``(p, q)``, complex, ``(n,)`` each, of :func:`pair_map` along a dimension of length ``n``.

    ``"dct"``: ``p_k = f_k ω_k``, ``q_k = f_k ω̄_k``. ``"idct"`` (its inverse): ``p_k = ω̄_k / 2f_k``,
    ``q_k = −i ω̄_k / 2f_k`` for ``k ≥ 1`` and ``q_0 = 0``."""
    omega = np.exp(-1j * np.pi * np.arange(n) / (2 * n))
    f = _full_factors(n, norm)
    if direction == "dct":
        p, q = f * omega, f * omega.conj()
    else:
        p = omega.conj() / (2 * f)
        q = -1j * p
        q[0] = 0
    return tuple(torch.as_tensor(c, dtype=_complex(dtype), device=device) for c in (p, q))


@constant_cache(maxsize=128)
def _index(kind: str, n: int, device: torch.device) -> torch.Tensor:
    """Index tables along a dimension of length ``n``: ``"reorder"`` ``[0, 2, 4, …, 5, 3, 1]``, ``"unreorder"``
    (its inverse) and ``"negate"`` (``k ↦ −k mod n``)."""
    order = np.concatenate([np.arange(0, n, 2), np.arange(n - 1 - n % 2, 0, -2)])
    table = {"reorder": order, "unreorder": np.argsort(order), "negate": (-np.arange(n)) % n}[kind]
    return torch.as_tensor(table, dtype=torch.int64, device=device)


def _broadcast_along(t: torch.Tensor, dim: int, ndim: int) -> torch.Tensor:
    """A 1-D ``t`` viewed to broadcast along ``dim`` of an ``ndim``-dimensional tensor."""
    return t.view(-1, *([1] * (ndim - 1 - dim)))


def _native_last(x: torch.Tensor, dim: int) -> bool:
    return dim == x.dim() - 1 and uses_native(x)


def _permute(x: torch.Tensor, dim: int, kind: str, kernel) -> torch.Tensor:
    n = x.shape[dim]
    if _native_last(x, dim):
        rows = x.reshape(-1, n).contiguous()
        out = torch.empty_like(rows)
        kernel(rows, out)
        return out.view(x.shape)
    return x.index_select(dim, _index(kind, n, x.device))


#: Largest flattened size of adjacent dimensions reordered with one gather (its index is that long).
_JOINT_MAX = 1 << 22


@constant_cache(maxsize=64)
def _joint_index(kind: str, sizes: tuple, device: torch.device) -> torch.Tensor:
    """:func:`_index` ``kind`` along each of adjacent dimensions of ``sizes`` at once, as one index into their
    flattened product (row-major)."""
    joint = _index(kind, sizes[0], device)
    for n in sizes[1:]:
        joint = (joint[:, None] * n + _index(kind, n, device)[None, :]).reshape(-1)
    return joint


def _permute_dims(x: torch.Tensor, dims: list[int], kind: str, kernel) -> torch.Tensor:
    """:func:`_permute` along each of ``dims`` (non-negative, increasing) in as few passes as possible: a run of
    adjacent dimensions that ends with the last one in one native pass (rows read through the run's joint
    index, each permuted along the last dimension), where the native kernels run; another run of adjacent
    dimensions with one gather over their flattened product."""
    runs: list[list[int]] = []
    for d in dims:
        if runs and runs[-1][-1] == d - 1:
            runs[-1].append(d)
        else:
            runs.append([d])
    v = x
    for run in runs:
        if run[-1] == v.dim() - 1 and _native_last(v, run[-1]):
            leading = tuple(v.shape[d] for d in run[:-1])
            if run[:-1] and math.prod(leading) <= _JOINT_MAX:  # the whole run in one native pass
                shape, n = v.shape, v.shape[-1]
                rows = v.reshape(-1, math.prod(leading), n).contiguous()
                out = _native.dct_reorder_rows(rows, _joint_index(kind, leading, v.device), torch.empty_like(rows),
                                               inverse=kind == "unreorder")
                v = out.view(shape)
                continue
            v = _permute(v, run[-1], kind, kernel)
            run = run[:-1]
        sizes = tuple(v.shape[d] for d in run)
        if len(run) > 1 and math.prod(sizes) <= _JOINT_MAX:
            shape = v.shape
            merged = v.reshape(*shape[: run[0]], -1, *shape[run[-1] + 1 :])
            v = merged.index_select(run[0], _joint_index(kind, sizes, v.device)).view(shape)
        else:
            for d in run:
                v = _permute(v, d, kind, kernel)
    return v


def reorder(x: torch.Tensor, dims: list[int]) -> torch.Tensor:
    """``[x0, x2, x4, …, x5, x3, x1]`` along each of ``dims`` (non-negative, increasing): a new contiguous
    tensor."""
    return _permute_dims(x, dims, "reorder", _native.dct_reorder)


def unreorder(v: torch.Tensor, dims: list[int]) -> torch.Tensor:
    """The inverse of :func:`reorder` along each of ``dims``."""
    return _permute_dims(v, dims, "unreorder", _native.dct_unreorder)


def post(spectrum: torch.Tensor, dim: int, n: int, a: torch.Tensor, b: torch.Tensor,
         out: torch.Tensor | None = None) -> torch.Tensor:
    """The real DCT-II output, length ``n`` along ``dim``, of a half spectrum (``n//2 + 1`` bins along ``dim``).

    ``out``: a contiguous buffer of the output's shape the native kernel may write into (ignored otherwise)."""
    m = n // 2 + 1
    if dim == spectrum.dim() - 1 and uses_native(a) and spectrum.is_contiguous():
        rows = spectrum.numel() // m
        target = out.view(rows, n) if out is not None else a.new_empty(rows, n)
        _native.dct_post(torch.view_as_real(spectrum).view(rows, m, 2), a, b, target)
        return target.view(*spectrum.shape[:-1], n)
    a, b = (_broadcast_along(t, dim, spectrum.dim()) for t in (a, b))
    parts = torch.view_as_real(spectrum)
    re, im = parts[..., 0], parts[..., 1]
    head = a * re + b * im
    tail = (b * re - a * im).narrow(dim, 1, n - m).flip(dim)
    return torch.cat([head, tail], dim)


def pre(X: torch.Tensor, dim: int, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The half spectrum (complex, ``n//2 + 1`` bins along ``dim``) that :func:`post` maps to ``X``:
    ``V_k = (a_k X_k + b_k X_{n−k}) + i (b_k X_k − a_k X_{n−k})``, with ``X_n = 0``."""
    n = X.shape[dim]
    m = n // 2 + 1
    if _native_last(X, dim):
        rows = X.reshape(-1, n).contiguous()
        z = rows.new_empty(rows.shape[0], m, 2)
        _native.idct_pre(rows, a, b, z)
        return torch.view_as_complex(z).view(*X.shape[:-1], m)
    a, b = (_broadcast_along(t, dim, X.dim()) for t in (a, b))
    head = X.narrow(dim, 0, m)
    mirrored = torch.cat([torch.zeros_like(X.narrow(dim, 0, 1)), X.narrow(dim, n - m + 1, m - 1).flip(dim)], dim)
    return torch.complex(a * head + b * mirrored, b * head - a * mirrored)


def pair_map(Z: torch.Tensor, dim: int, p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``Z_k ↦ p_k Z_k + q_k Z_{−k}`` along ``dim`` of a complex tensor (indices mod the length): one native pass
    on the CPU for a contiguous ``Z``, else three PyTorch ops."""
    if uses_native(Z.real) and Z.is_contiguous():
        n = Z.shape[dim]
        outer, inner = math.prod(Z.shape[:dim]), math.prod(Z.shape[dim + 1 :])
        out = torch.empty_like(Z)
        z_real, out_real = (torch.view_as_real(t).view(outer, n, inner, 2) for t in (Z, out))
        _native.pair_map(z_real, torch.view_as_real(p), torch.view_as_real(q), out_real, outer, n, inner)
        return out
    p, q = (_broadcast_along(t, dim, Z.dim()) for t in (p, q))
    out = Z.index_select(dim, _index("negate", Z.shape[dim], Z.device))  # a new tensor: updated in place
    return out.mul_(q).addcmul_(Z, p)


#: Lengths the fused native transform runs (powers of two; its workspace is ``2n`` vectors per thread).
FUSED_SIZES = range(2, (1 << 16) + 1)
#: Along the last dimension, above this length the fused transform needs ``n / FUSED_ROWS_DIVISOR`` rows or more:
#: it works on chunks of a vector's width of rows, and with fewer rows torch's one-row FFTs are faster (measured
#: at n = 16384 and 65536, docs/transforms.md).
FUSED_ANY_ROWS_MAX = 4096
FUSED_ROWS_DIVISOR = 512


def _fusable(x: torch.Tensor, dim: int) -> bool:
    """Whether the DCT along ``dim`` of ``x`` runs as one native pass (:func:`_fused`): a power-of-two length
    in :data:`FUSED_SIZES`, native kernels, and along the last dimension enough rows for a long one
    (:data:`FUSED_ANY_ROWS_MAX`), along another at least a vector's width of positions after it."""
    if not uses_native(x):  # first: composite forms, which torch.compile may trace with symbolic sizes, stop here
        return False
    n = x.shape[dim]
    if n not in FUSED_SIZES or n & (n - 1):
        return False
    if dim == x.dim() - 1:
        return n <= FUSED_ANY_ROWS_MAX or x.numel() // n * FUSED_ROWS_DIVISOR >= n
    return math.prod(x.shape[dim + 1 :]) >= _native.lanes(x.dtype)


@constant_cache(maxsize=128)
def _fused_plan(direction: str, n: int, norm: str, dtype: torch.dtype) -> _native.DctPlan:
    """The fused kernel's checked tables (:func:`structlin._native.dct_plan`): :func:`twiddles` of each FFT slot's
    bin, the FFT's tables, and each column's position in the reordered row."""
    tw, br = fft_tables(n, dtype)
    cpu = torch.device("cpu")
    slot_bins = torch.cat([br, torch.tensor([n // 2])])
    a, b = twiddles(direction, n, norm, cpu, dtype)
    ab = torch.stack([a[slot_bins], b[slot_bins]], 1).contiguous()
    return _native.dct_plan(ab, tw, br, _index("unreorder", n, cpu), inverse=direction == "idct")


def _fused(x: torch.Tensor, dims: list[int], direction: str, norm: str) -> torch.Tensor:
    """The DCT-II (``direction="dct"``) or DCT-III over ``dims`` of ``x`` (each :func:`_fusable`), one native pass
    along each dimension: the first writes a new tensor, the others transform it in place."""
    shape = x.shape
    y = x.contiguous()
    out = torch.empty_like(y) if y is x else y
    for d in reversed(dims):  # the first pass reads x and writes `out`; the others work in place
        _native.dct_dim(y, out, _fused_plan(direction, shape[d], norm, x.dtype), math.prod(shape[:d]),
                        math.prod(shape[d + 1 :]))
        y = out
    return out


def _all_fusable(x: torch.Tensor, dims: list[int]) -> bool:
    """:func:`_fusable` along every one of ``dims`` (a loop: this runs on every call)."""
    for d in dims:
        if not _fusable(x, d):
            return False
    return True


def forward(x: torch.Tensor, dims: list[int], norm: str) -> torch.Tensor:
    """DCT-II of a real ``x`` over ``dims`` (non-negative, increasing, not empty), contiguous."""
    if _all_fusable(x, dims):
        return _fused(x, dims, "dct", norm)
    v = reorder(x, dims)
    spectrum = torch.fft.rfftn(v, dim=dims)
    for d in dims[:-1]:
        spectrum = pair_map(spectrum, d, *_pair_coefficients("dct", x.shape[d], norm, x.device, x.dtype))
    last = dims[-1]
    a, b = twiddles("dct", x.shape[last], norm, x.device, x.dtype)
    return post(spectrum, last, x.shape[last], a, b, out=v)


def inverse(X: torch.Tensor, dims: list[int], norm: str) -> torch.Tensor:
    """The inverse of :func:`forward` (a DCT-III over ``dims``), contiguous."""
    if _all_fusable(X, dims):
        return _fused(X, dims, "idct", norm)
    last = dims[-1]
    spectrum = pre(X, last, *twiddles("idct", X.shape[last], norm, X.device, X.dtype))
    for d in dims[:-1]:
        spectrum = pair_map(spectrum, d, *_pair_coefficients("idct", X.shape[d], norm, X.device, X.dtype))
    v = torch.fft.irfftn(spectrum, s=[X.shape[d] for d in dims], dim=dims)
    return unreorder(v, dims)
