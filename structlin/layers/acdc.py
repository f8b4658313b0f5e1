"""The ACDC layer: a cascade of ``x ↦ C⁻¹ diag(D) C diag(A) x`` blocks (Moczulski et al., ICLR 2016).

A linear cascade runs one of two ways, chosen per call by :func:`plan` (or fixed by the ``path`` option):

* ``"fft"``: the cascade on the rows (:func:`~structlin.transforms.acdc.acdc_cascade`), ``O(depth · N log N)``
  per row;
* ``"dense"``: the cascade on the ``in_features`` rows of an identity matrix gives the layer's ``(in, out)``
  matrix ``M`` (with its gradient flowing back to ``A`` and ``D``), then one GEMM, ``y = x M + bias``.

Both compute the same function up to float rounding. The dense path wins where a GEMM of the batch costs less
than the cascade's fixed and per-row costs: small ``N``, many rows (see :func:`plan` and ``docs/acdc.md``).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import torch
from torch import nn

from ..costs import (
    Cost,
    acdc_block_backward_flops,
    acdc_block_flops,
    acdc_coefficient_backward_flops,
    acdc_coefficient_flops,
    acdc_path_seconds,
    acdc_recompute_flops,
    dct_flops,
    idct_flops,
)
from ..strategies.depth import Depth, resolve_depth
from ..strategies.init import ACDCInit, resolve_acdc_init
from ..transforms._backend import constant_cache
from ..transforms.acdc import acdc_cascade, gather_last, native_cascade
from ..transforms.dct import dct, idct
from ._checks import check_compute_dtype, compute_dtype
from .activations import activation_gain, is_elementwise, is_plain_relu, resolve_activation
from .base import StructuredLayer, bookkeeping, register_layer

__all__ = ["ACDC", "plan", "PATHS", "PERMUTES", "riffle_permutation"]

#: The values of ``ACDC(path=...)``: choose per call, always the cascade, always the materialised matrix.
PATHS = ("auto", "fft", "dense")
#: The values of ``ACDC(permute=...)``: random permutations between blocks, none, or the fixed riffle.
PERMUTES = (True, False, "riffle")


def riffle_permutation(n: int) -> torch.Tensor:
    """``(n,)`` int64 ``[0, 2, 4, …, 1, 3, 5, …]``: the even positions, then the odd ones. As a permutation
    between blocks (``v ↦ v[riffle]``) it is the fixed riffle shuffle of the pytorch-acdc package (its
    ``Riffle`` module on an even ``n``)."""
    return torch.cat([torch.arange(0, n, 2), torch.arange(1, n, 2)])


def _riffles(rows: int, size: int) -> torch.Tensor:
    """``(rows, size)``: :func:`riffle_permutation` in every row (the ``permute="riffle"`` buffer's values)."""
    return riffle_permutation(size).expand(rows, size).clone()


def plan(rows: int, in_features: int, out_features: int, depth: int, *, dtype: torch.dtype = torch.float32,
         device: torch.device | str = "cpu", grad: bool = True) -> str:
    """``"fft"`` or ``"dense"``: the faster way to run a linear ``depth``-block cascade of size
    ``N = max(in_features, out_features)`` on ``rows`` rows of ``dtype`` on ``device``, forward and, with
    ``grad``, backward, by the time model :func:`structlin.costs.acdc_path_seconds` (calibrated on the CPU; see
    ``docs/acdc.md``). Deterministic: a function of its arguments only. Empty batches take the FFT path (nothing
    to run)."""
    if rows == 0:
        return "fft"
    device = torch.device(device)
    size = max(in_features, out_features)
    native = native_cascade(size, dtype, device.type)
    fft, dense = acdc_path_seconds(rows, in_features, out_features, depth, grad=grad, native=native,
                                   device_type=device.type, itemsize=torch.finfo(dtype).bits // 8)
    return "dense" if dense < fft else "fft"


@constant_cache(maxsize=32)
def _identity(size: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return torch.eye(size, dtype=dtype, device=device)


#: Largest size whose block offsets are computed with the DCT matrix (two GEMMs of ``(depth, N) × (N, N)``)
#: rather than two transforms: below it the matrix products cost less than the transforms' fixed costs
#: (measured 123 against 399 µs forward and backward at N = 256, 286 against 441 µs at N = 512, 940 against
#: 513 µs at N = 1024, depth 4, 2 threads). Under ``torch.compile`` the transforms run at every size.
OFFSETS_MATRIX_MAX = 512


@constant_cache(maxsize=16)
def _dct_matrix(size: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``(size, size)`` ``Cᵀ``, the orthonormal DCT-II's transpose: ``x @ Cᵀ == dct(x)``, ``y @ C == idct(y)``."""
    with bookkeeping():
        return dct(torch.eye(size, dtype=torch.float64), norm="ortho").to(dtype=dtype, device=device)


class _Gathers(NamedTuple):
    """The index tables that depend on the sizes alone, int64 on one device (see :func:`_gathers`)."""

    order: torch.Tensor  # (n,) Makhoul's order: (P x)[j] = x[order[j]]
    unorder: torch.Tensor  # (n,) its inverse
    gather_in: tuple[torch.Tensor, torch.Tensor]  # (index (n,), inverse (in,)): pad and reorder the input
    gather_out: tuple[torch.Tensor, torch.Tensor]  # (index (out,), inverse (n,)): un-reorder and truncate


def _inverse(index: torch.Tensor, size: int) -> torch.Tensor:
    """``(size,)``: ``inverse[index[j]] = j`` where ``index[j] >= 0``, −1 elsewhere (``index`` has no repeats)."""
    target = torch.where(index >= 0, index, size)  # −1 entries land in a spare slot, dropped below
    inverse = torch.full((size + 1,), -1, dtype=torch.int64, device=index.device)
    return inverse.scatter_(0, target, torch.arange(index.shape[0], device=index.device))[:size]


def _gathers(n: int, in_features: int, out_features: int, device: torch.device) -> _Gathers:
    """The gathers of an ``n``-point cascade with ``in_features`` inputs and ``out_features`` outputs: Makhoul's
    order ``[0, 2, 4, …, 5, 3, 1]`` and its inverse, the input gather (zero padding where ``order ≥ in``) and the
    output gather (the first ``out_features`` of the un-reordered result). Torch ops only, so that it traces."""
    arange = functools.partial(torch.arange, dtype=torch.int64, device=device)
    order = torch.cat([arange(0, n, 2), arange(1, n, 2).flip(0)])
    unorder = torch.argsort(order)
    in_index = torch.where(order < in_features, order, -1)
    out_index = unorder[:out_features]
    return _Gathers(order, unorder, (in_index, _inverse(in_index, in_features)), (out_index, _inverse(out_index, n)))


@functools.lru_cache(maxsize=256)
def _cached_gathers(n: int, in_features: int, out_features: int, device: torch.device) -> _Gathers:
    with bookkeeping():
        return _gathers(n, in_features, out_features, device)


@register_layer("acdc")
class ACDC(StructuredLayer):
    r"""A cascade of ``depth`` ACDC blocks, ``y = B_K … π σ(B_2 π σ(B_1 x)) + bias``.

    Each block is ``B_i x = C⁻¹ diag(D_i) C diag(A_i) x`` with ``C`` the orthonormal DCT-II; with
    ``diagonal_bias`` it is the authors' affine block ``B_i x = C⁻¹ (D_i ⊙ C (A_i ⊙ x + a_i) + d_i)``. Between
    blocks an optional fixed permutation ``π_i`` (random, or the riffle) and activation ``σ``. Size
    ``N = max(in_features, out_features)``: the input is zero-padded to ``N`` and the output truncated to
    ``out_features``.

    The whole cascade runs in Makhoul's reordered domain (see :mod:`structlin.transforms.acdc`): one rfft and
    one irfft per block, a per-bin 2×2 map for ``C⁻¹ D C``, one gather in, one out and one per permutation.
    Without an activation, or with an activation that is exactly ``nn.ReLU`` with no hooks, the cascade is one
    custom op (``structlin::acdc_cascade``, the ReLUs inside it); any other activation (a subclass of ``nn.ReLU``
    included) runs as given between one-block ops, and sees its input in natural feature order unless it is
    exactly one of torch's elementwise activations with no hooks.

    Memory for backward: with ``recompute=True`` (the default) the cascade op saves only the layer's input, as
    ``nn.Linear`` does (``rows · in_features · itemsize`` bytes), and its backward recomputes the block inputs a
    chunk of rows at a time; with ``recompute=False`` it saves every block's input (``depth`` tensors of
    ``rows · N``), which spares the backward one ``irfft`` per block. An activation run outside the op saves
    what its own backward needs too.

    Path: a linear cascade (no activation) runs either as the cascade on the rows or, where that is slower, as
    one GEMM with the cascade's dense matrix, materialised differentiably on each call (``path="auto"``, see
    :func:`plan`); the two give the same function up to float rounding.

    The gather tables are derived from ``permutations`` on demand and follow it: an in-place edit, a load or a
    move of the buffer is seen by the next call, forward and backward. A ``permutations`` value whose rows are not
    permutations of ``0 … N−1`` (or not int64 of shape ``(depth − 1, N)``) raises a ``ValueError`` naming the
    buffer, at the next call after an edit and before anything is copied by ``load_state_dict``.

    Float16/bfloat16 parameters compute in float32 and return the input's dtype.

    Args:
        in_features, out_features: sizes of the last dimension of input and output.
        depth: number of blocks: an int, or a depth strategy (``"log2"`` is ``⌈log₂ N⌉``; see
            :mod:`structlin.strategies.depth`).
        bias: learn an output bias of shape ``(out_features,)``, initialized to zero.
        init: initialization of ``A`` and ``D``: ``"paper"`` (``N(1, 0.01²)``), ``"identity"``,
            ``"variance-preserving"`` (keeps the mean square through the activation), ``"authors"`` (exactly 1;
            :class:`~structlin.strategies.init.Authors` for their noise and sign options), or an
            :class:`~structlin.strategies.init.ACDCInit` object.
        permute: ``True``: a fixed random permutation between blocks (drawn from torch's global RNG when the
            layer is built, or by ``reset_parameters()`` after ``to_empty()``); ``"riffle"``: the fixed riffle
            :func:`riffle_permutation` between blocks (nothing drawn); ``False``: none. Either permutation is
            stored in the ``state_dict`` as the buffer ``permutations``, shape ``(depth - 1, N)``.
        diagonal_bias: learn a bias after each diagonal, ``A_bias`` and ``D_bias`` ``(depth, N)``, zero at the
            start (the block is then affine; see above). It runs inside the cascade op: each block's
            ``C⁻¹ (D_i ⊙ C a_i + d_i)`` is computed once per call from the parameters and added to the block's
            output there.
        activation: ``None``, a name (``"relu"``, ``"gelu"``, ``"tanh"``, …) or an ``nn.Module``, applied
            between blocks (not after the last).
        recompute: keep only the input for backward and recompute the block inputs there (default), or keep
            every block's input (False).
        path: ``"auto"`` (choose per call with :func:`plan`), ``"fft"`` (always the cascade on the rows) or
            ``"dense"`` (always the materialised matrix; a linear layer only: ``ValueError`` with an activation).
        device, dtype: of the parameters; dtype float16, bfloat16, float32 or float64 (``TypeError`` otherwise).
            ``device="meta"`` builds without data (see :class:`~structlin.StructuredLayer`).

    Shape:
        input ``(..., in_features)`` → output ``(..., out_features)``.

    Attributes:
        A, D: ``(depth, N)`` parameters, the diagonals in natural (not reordered) order.
        A_bias, D_bias: ``(depth, N)`` parameters (``diagonal_bias=True``) or ``None``.
        bias: ``(out_features,)`` or ``None``.
        permutations: ``(depth − 1, N)`` int64 buffer (``π_i v = v[permutations[i]]``) or ``None``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        depth: Depth = 1,
        bias: bool = True,
        init: str | ACDCInit = "paper",
        permute: bool | str = True,
        activation: str | nn.Module | None = None,
        recompute: bool = True,
        path: str = "auto",
        diagonal_bias: bool = False,
        device=None,
        dtype=None,
    ):
        super().__init__(in_features, out_features)
        factory = self.factory_kwargs(device, dtype)
        self.size = n = max(in_features, out_features)
        self.depth = resolve_depth(depth, n)
        self.init = resolve_acdc_init(init)
        self.activation = resolve_activation(activation)
        if path not in PATHS:
            raise ValueError(f"path must be one of {', '.join(map(repr, PATHS))}, got {path!r}")
        if path == "dense" and self.activation is not None:
            raise ValueError("path='dense' needs a linear cascade (activation=None): with an activation between "
                             "blocks the layer has no dense matrix")
        if isinstance(permute, str) and permute not in PERMUTES:
            raise ValueError(f"permute must be True, False or 'riffle', got {permute!r}")
        permute = permute if isinstance(permute, str) else bool(permute)
        self.recompute = bool(recompute)
        self.path = path
        self.permute = permute
        self.A = nn.Parameter(torch.empty(self.depth, n, **factory))
        self.D = nn.Parameter(torch.empty(self.depth, n, **factory))
        for name in ("A_bias", "D_bias"):
            value = nn.Parameter(torch.empty(self.depth, n, **factory)) if diagonal_bias else None
            self.register_parameter(name, value)
        self.bias = nn.Parameter(torch.empty(out_features, **factory)) if bias else None
        if permute and self.depth > 1:
            draw = _riffles if permute == "riffle" else None
            self.register_permutations("permutations", self.depth - 1, n, device=self.A.device, draw=draw)
        else:
            self.register_buffer("permutations", None)
        self.reset_parameters()

    @property
    def _fused_relu(self) -> bool:
        """ReLUs between blocks run inside the cascade op (other activations run between one-block ops)."""
        return is_plain_relu(self.activation)

    @property
    def diagonal_bias(self) -> bool:
        return self.A_bias is not None

    def reset_parameters(self) -> None:
        """Redraw ``A`` and ``D`` with the init strategy and zero the biases. The permutations stay once drawn
        (they are drawn here only when they hold no values: at construction or after ``to_empty()``)."""
        self.prepare_reset()
        with torch.no_grad():
            self.init.init_(self.A, self.D, activation_gain(self.activation))
            for bias in (self.bias, self.A_bias, self.D_bias):
                if bias is not None:
                    bias.zero_()

    def _size_tables(self) -> _Gathers:
        sizes = (self.size, self.in_features, self.out_features, self.A.device)
        return _gathers(*sizes) if torch.compiler.is_compiling() else _cached_gathers(*sizes)

    def _permutation_tables(self, permutations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(k − 1, N)`` permutations in natural order → ``(index, inverse)``, the same permutations as gathers in
        Makhoul's order (the reordering composed in: ``index = unorder[perm[:, order]]``)."""
        gathers = self._size_tables()
        index = gathers.unorder[permutations.index_select(1, gathers.order)]
        return index, torch.argsort(index, dim=1)

    def _activate(self, v: torch.Tensor, gathers: _Gathers) -> torch.Tensor:
        if is_elementwise(self.activation):
            return self.activation(v)  # commutes with the reordering
        x = gather_last(v, gathers.unorder, gathers.order)
        return gather_last(self.activation(x), gathers.order, gathers.unorder)

    def block_offsets(self) -> torch.Tensor | None:
        """``(depth, N)``: row ``i`` is ``C⁻¹ (D_i ⊙ C a_i + d_i)``, what the diagonal biases add to block ``i``'s
        output (``B_i x = C⁻¹ D_i C A_i x + offset_i``), in the compute dtype and differentiable in ``D``,
        ``A_bias`` and ``D_bias``; ``None`` without diagonal biases."""
        if self.A_bias is None:
            return None
        compute = compute_dtype(self.A.dtype)
        A_bias, D_bias, D = (t.to(compute) for t in (self.A_bias, self.D_bias, self.D))
        if self.size <= OFFSETS_MATRIX_MAX and not torch.compiler.is_compiling():  # the matrix is a cached constant
            transposed = _dct_matrix(self.size, compute, D.device)
            # back to the compute dtype: under autocast the products run in half precision
            return (torch.addcmul(D_bias, D, A_bias @ transposed) @ transposed.T).to(compute)
        return idct(torch.addcmul(D_bias, D, dct(A_bias, norm="ortho")), norm="ortho")

    def _cascade(self, x: torch.Tensor, with_offsets: bool = True) -> torch.Tensor:
        """The cascade (no output bias; the diagonal biases unless ``with_offsets`` is False) on ``x``
        ``(..., in_features)`` in the compute dtype."""
        compute = compute_dtype(self.A.dtype)
        A, D = self.A.to(compute), self.D.to(compute)
        offsets = self.block_offsets() if with_offsets else None
        gathers = self._size_tables()
        perms = self.derived("permutations", self._permutation_tables) if self.permutations is not None else None
        if self.activation is None or self._fused_relu:  # the whole cascade in one op
            return acdc_cascade(x, A, D, gather_in=gathers.gather_in, permutations=perms,
                                gather_out=gathers.gather_out, relu=self._fused_relu, recompute=self.recompute,
                                offsets=offsets)
        # one block at a time; unbind, not A[i : i + 1]: its backward stacks the k row gradients once instead of
        # summing k full (k, ·) ones
        last = self.depth - 1
        rows = offsets.unbind(0) if offsets is not None else (None,) * self.depth
        for i, (a, d, offset) in enumerate(zip(A.unbind(0), D.unbind(0), rows)):
            x = acdc_cascade(x, a.unsqueeze(0), d.unsqueeze(0), gather_in=gathers.gather_in if i == 0 else None,
                             gather_out=gathers.gather_out if i == last else None, recompute=self.recompute,
                             offsets=None if offset is None else offset.unsqueeze(0))
            if i < last:
                if perms is not None:
                    x = gather_last(x, perms[0][i], perms[1][i])
                x = self._activate(x, gathers)
        return x

    def _path(self, rows: int, dtype: torch.dtype, device: torch.device, grad: bool) -> str:
        """``"fft"`` or ``"dense"`` for a call on ``rows`` rows (see :func:`plan`)."""
        if self.activation is not None:
            return "fft"
        if self.path != "auto":
            return self.path
        return plan(rows, self.in_features, self.out_features, self.depth, dtype=dtype, device=device, grad=grad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., in_features)`` → ``(..., out_features)``."""
        self._check_input(x)
        compute = compute_dtype(self.A.dtype)
        check_compute_dtype(self, x, self.A.dtype, self.A.device, compute)
        dtype, x = x.dtype, x.to(compute)
        learned = (self.A, self.D) + ((self.A_bias, self.D_bias) if self.diagonal_bias else ())
        grad = torch.is_grad_enabled() and any(t.requires_grad for t in (x, *learned))
        rows = x.numel() // self.in_features
        bias = self.bias.to(compute) if self.bias is not None else None
        if self._path(rows, compute, x.device, grad) == "dense":
            identity = _identity(self.in_features, compute, x.device)
            # (in, out): row j is the linear part's output for input e_j
            matrix = self._cascade(identity, with_offsets=False)
            if self.diagonal_bias:  # the affine part: the cascade's output for a zero input
                offset = self._cascade(identity.new_zeros(1, self.in_features))[0]
                bias = offset if bias is None else bias + offset
            flat = x.reshape(-1, self.in_features)
            y = flat @ matrix if bias is None else torch.addmm(bias, flat, matrix)
            return y.view(*x.shape[:-1], self.out_features).to(dtype)
        y = self._cascade(x)
        if bias is not None:
            y = y + bias
        return y.to(dtype)

    def to_dense(self) -> torch.Tensor:
        """The ``(out_features, in_features)`` matrix ``W`` with ``forward(x) == x @ W.T + dense_bias()``
        (``dense_bias()`` is ``bias`` without diagonal biases)."""
        self._check_linear()
        with torch.no_grad():
            eye = torch.eye(self.in_features, dtype=compute_dtype(self.A.dtype), device=self.A.device)
            return self._cascade(eye, with_offsets=False).T.contiguous().to(self.A.dtype)

    def dense_bias(self) -> torch.Tensor:
        """The ``(out_features,)`` vector ``b`` with ``forward(x) == x @ to_dense().T + b``: ``bias`` plus, with
        diagonal biases, the cascade's output for a zero input."""
        self._check_linear()
        with torch.no_grad():
            compute = compute_dtype(self.A.dtype)
            b = torch.zeros(self.out_features, dtype=compute, device=self.A.device)
            if self.diagonal_bias:
                b = self._cascade(b.new_zeros(1, self.in_features))[0]
            if self.bias is not None:
                b = b + self.bias.to(compute)
            return b.to(self.A.dtype)

    def _check_linear(self) -> None:
        if self.activation is not None:
            raise TypeError("ACDC with an activation between blocks is not a linear map, so it has no dense weight")

    def cost(self, batch_shape=()) -> Cost:
        """Analytic cost of a training call (grad enabled) on inputs ``(*batch_shape, in_features)``, on the path
        :func:`plan` picks for it (float32 on the CPU, or the layer's ``path``); see :mod:`structlin.costs`."""
        rows, n, k = self._rows(batch_shape), self.size, self.depth
        compute = compute_dtype(self.A.dtype)
        itemsize = torch.finfo(compute).bits // 8  # the saved tensors are in the compute dtype
        device = self.A.device if self.A.device.type != "meta" else torch.device("cpu")
        bias = self.out_features if self.bias is not None else 0
        shifted = self.diagonal_bias
        params = (4 if shifted else 2) * k * n + bias
        coefficients, coefficients_backward = k * acdc_coefficient_flops(n), k * acdc_coefficient_backward_flops(n)
        # the block offsets from the diagonal biases, once per call: a DCT, D ⊙ · + d and an inverse DCT per
        # block (two GEMMs with the DCT matrix up to OFFSETS_MATRIX_MAX); backward: the adjoint transforms (GEMMs),
        # addcmul's two products (each 2 per element: the other factor times its value 1, then the gradient) and
        # D's gradient summed with the cascade's
        transforms = 4 * k * n * n if n <= OFFSETS_MATRIX_MAX else k * (dct_flops(n) + idct_flops(n))
        offsets = transforms + 2 * k * n if shifted else 0
        offsets_backward = transforms + 5 * k * n if shifted else 0
        if self._path(rows, compute, device, True) == "dense":
            # the cascade on the in_features rows of the identity, then one GEMM (addmm with a bias)
            inner, outer = self.in_features, 2 * rows * self.in_features * self.out_features
            recomputed = acdc_recompute_flops(n, k) if self.recompute else 0
            forward = inner * k * acdc_block_flops(n) + coefficients + outer
            cascade_backward = inner * (k * acdc_block_backward_flops(n) + recomputed) + coefficients_backward
            backward = 2 * outer + cascade_backward
            if shifted:  # and on one zero row with the offsets, added to the bias: a second use of A and D
                forward += offsets + k * acdc_block_flops(n) + coefficients + k * n + bias
                backward += (offsets_backward + k * acdc_block_backward_flops(n) + recomputed + coefficients_backward
                             + (k - 1) * n * self.recompute + 2 * k * n)
            added = self.out_features if self.bias is not None or shifted else 0  # addmm's bias
            forward += rows * added
            backward += max(rows - 1, 0) * added
            return Cost(params=params, forward_flops=forward, backward_flops=backward,
                        saved_bytes=rows * self.in_features * itemsize)
        between = (k - 1) * n if self.activation is not None else 0  # one op per element per activation
        # the per-bin coefficients from D, once per block, and their gradients back to D
        forward = rows * (k * acdc_block_flops(n) + between + bias) + coefficients + offsets
        bias_backward = max(rows - 1, 0) * bias  # summing the output gradient over the rows
        backward = rows * (k * acdc_block_backward_flops(n) + between) + bias_backward + coefficients_backward
        backward += offsets_backward
        if shifted:  # each block's output offset added to every row; its gradient summed over the rows
            forward += rows * k * n
            backward += max(rows - 1, 0) * k * n
        outside = self.activation is not None and not self._fused_relu  # one op per block
        if self.recompute and not outside:  # the block inputs recomputed from the layer's input
            backward += rows * (acdc_recompute_flops(n, k, self._fused_relu) + ((k - 1) * n if shifted else 0))
        # saved: the first block's input (the layer's input with recompute, else its padded copy), the other
        # block inputs unless one op recomputes them, and what each activation run outside the op keeps
        first = self.in_features if self.recompute else n
        others = 0 if self.recompute and not outside else (k - 1) * n
        saved = rows * itemsize * (first + others + ((k - 1) * n if outside else 0))
        return Cost(params=params, forward_flops=forward, backward_flops=backward, saved_bytes=saved)

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, size={self.size}, depth={self.depth}, bias={self.bias is not None}, "
            f"permute={self.permute!r}, init={self.init!r}, recompute={self.recompute}, path={self.path!r}"
            + (", diagonal_bias=True" if self.diagonal_bias else "")
        )

    def __setstate__(self, state):
        super().__setstate__(state)
        # layers pickled before these options existed: the defaults compute the same function
        self.__dict__.setdefault("recompute", True)
        self.__dict__.setdefault("path", "auto")
        self.__dict__.setdefault("permute", self._buffers.get("permutations") is not None)
        for name in ("A_bias", "D_bias"):
            if name not in self._parameters:
                self._parameters[name] = None
