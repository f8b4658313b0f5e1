"""The ACDC layer: a cascade of ``x ↦ C⁻¹ diag(D) C diag(A) x`` blocks (Moczulski et al., ICLR 2016)."""

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
)
from ..strategies.depth import Depth, resolve_depth
from ..strategies.init import ACDCInit, resolve_acdc_init
from ..transforms.acdc import acdc_cascade, gather_last
from ._checks import check_compute_dtype, compute_dtype
from .activations import activation_gain, is_elementwise, is_plain_relu, resolve_activation
from .base import StructuredLayer, bookkeeping, register_layer

__all__ = ["ACDC"]


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

    Each block is ``B_i x = C⁻¹ diag(D_i) C diag(A_i) x`` with ``C`` the orthonormal DCT-II; between blocks an
    optional fixed random permutation ``π_i`` and activation ``σ``. Size ``N = max(in_features,
    out_features)``: the input is zero-padded to ``N`` and the output truncated to ``out_features``.

    The whole cascade runs in Makhoul's reordered domain (see :mod:`structlin.transforms.acdc`): one rfft and
    one irfft per block, a per-bin 2×2 map for ``C⁻¹ D C``, one gather in, one out and one per permutation.
    Without an activation, or with an activation that is exactly ``nn.ReLU`` with no hooks, the cascade is one
    custom op (``structlin::acdc_cascade``, the ReLUs inside it); any other activation (a subclass of ``nn.ReLU``
    included) runs as given between one-block ops, and sees its input in natural feature order unless it is
    exactly one of torch's elementwise activations with no hooks. Each block saves only its input for backward;
    an activation run outside the op saves what its own backward needs too.

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
            ``"variance-preserving"`` (keeps the mean square through the activation), or an
            :class:`~structlin.strategies.init.ACDCInit` object.
        permute: put a fixed random permutation between blocks (drawn from torch's global RNG when the layer is
            built, or by ``reset_parameters()`` after ``to_empty()``; stored in the ``state_dict`` as the buffer
            ``permutations``, shape ``(depth - 1, N)``).
        activation: ``None``, a name (``"relu"``, ``"gelu"``, ``"tanh"``, …) or an ``nn.Module``, applied
            between blocks (not after the last).
        device, dtype: of the parameters; dtype float16, bfloat16, float32 or float64 (``TypeError`` otherwise).
            ``device="meta"`` builds without data (see :class:`~structlin.StructuredLayer`).

    Shape:
        input ``(..., in_features)`` → output ``(..., out_features)``.

    Attributes:
        A, D: ``(depth, N)`` parameters, the diagonals in natural (not reordered) order.
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
        permute: bool = True,
        activation: str | nn.Module | None = None,
        device=None,
        dtype=None,
    ):
        super().__init__(in_features, out_features)
        factory = self.factory_kwargs(device, dtype)
        self.size = n = max(in_features, out_features)
        self.depth = resolve_depth(depth, n)
        self.init = resolve_acdc_init(init)
        self.activation = resolve_activation(activation)
        self.A = nn.Parameter(torch.empty(self.depth, n, **factory))
        self.D = nn.Parameter(torch.empty(self.depth, n, **factory))
        self.bias = nn.Parameter(torch.empty(out_features, **factory)) if bias else None
        if permute and self.depth > 1:
            self.register_permutations("permutations", self.depth - 1, n, device=self.A.device)
        else:
            self.register_buffer("permutations", None)
        self.reset_parameters()

    @property
    def _fused_relu(self) -> bool:
        """ReLUs between blocks run inside the cascade op (other activations run between one-block ops)."""
        return is_plain_relu(self.activation)

    def reset_parameters(self) -> None:
        """Redraw ``A`` and ``D`` with the init strategy and zero the bias. The permutations stay once drawn
        (they are drawn here only when they hold no values: at construction or after ``to_empty()``)."""
        self.prepare_reset()
        with torch.no_grad():
            self.init.init_(self.A, self.D, activation_gain(self.activation))
            if self.bias is not None:
                self.bias.zero_()

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

    def _cascade(self, x: torch.Tensor) -> torch.Tensor:
        compute = compute_dtype(self.A.dtype)
        A, D = self.A.to(compute), self.D.to(compute)
        gathers = self._size_tables()
        perms = self.derived("permutations", self._permutation_tables) if self.permutations is not None else None
        if self.activation is None or self._fused_relu:  # the whole cascade in one op
            return acdc_cascade(x, A, D, gather_in=gathers.gather_in, permutations=perms,
                                gather_out=gathers.gather_out, relu=self._fused_relu)
        # one block at a time; unbind, not A[i : i + 1]: its backward stacks the k row gradients once instead of
        # summing k full (k, ·) ones
        last = self.depth - 1
        for i, (a, d) in enumerate(zip(A.unbind(0), D.unbind(0))):
            x = acdc_cascade(x, a.unsqueeze(0), d.unsqueeze(0), gather_in=gathers.gather_in if i == 0 else None,
                             gather_out=gathers.gather_out if i == last else None)
            if i < last:
                if perms is not None:
                    x = gather_last(x, perms[0][i], perms[1][i])
                x = self._activate(x, gathers)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., in_features)`` → ``(..., out_features)``."""
        self._check_input(x)
        compute = compute_dtype(self.A.dtype)
        check_compute_dtype(self, x, self.A.dtype, self.A.device, compute)
        y = self._cascade(x.to(compute))
        if self.bias is not None:
            y = y + self.bias.to(compute)
        return y.to(x.dtype)

    def to_dense(self) -> torch.Tensor:
        """The ``(out_features, in_features)`` matrix ``W`` with ``forward(x) == x @ W.T + bias``."""
        if self.activation is not None:
            raise TypeError("ACDC with an activation between blocks is not a linear map, so it has no dense weight")
        with torch.no_grad():
            eye = torch.eye(self.in_features, dtype=compute_dtype(self.A.dtype), device=self.A.device)
            return self._cascade(eye).T.contiguous().to(self.A.dtype)

    def cost(self, batch_shape=()) -> Cost:
        """Analytic cost for inputs ``(*batch_shape, in_features)``; see :mod:`structlin.costs`."""
        rows, n, k = self._rows(batch_shape), self.size, self.depth
        itemsize = torch.finfo(compute_dtype(self.A.dtype)).bits // 8  # the block inputs are saved in it
        between = (k - 1) * n if self.activation is not None else 0  # one op per element per activation
        bias = self.out_features if self.bias is not None else 0
        # the per-bin coefficients from D, once per block, and their gradients back to D
        forward = rows * (k * acdc_block_flops(n) + between + bias) + k * acdc_coefficient_flops(n)
        coefficients_backward = k * acdc_coefficient_backward_flops(n)
        bias_backward = max(rows - 1, 0) * bias  # summing the output gradient over the rows
        backward = rows * (k * acdc_block_backward_flops(n) + between) + bias_backward + coefficients_backward
        # the block inputs; an activation run outside the op (any but ReLU) saves what its backward needs too
        outside = self.activation is not None and not self._fused_relu
        saved = rows * n * itemsize * (k + (k - 1 if outside else 0))
        params = 2 * k * n + bias
        return Cost(params=params, forward_flops=forward, backward_flops=backward, saved_bytes=saved)

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, size={self.size}, depth={self.depth}, bias={self.bias is not None}, "
            f"permute={self.permutations is not None}, init={self.init!r}"
        )
