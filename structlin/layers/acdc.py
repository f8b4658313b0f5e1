"""The ACDC layer: a cascade of ``x ↦ C⁻¹ diag(D) C diag(A) x`` blocks (Moczulski et al., ICLR 2016)."""

from __future__ import annotations

import numpy as np
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
from ..transforms.acdc import acdc_cascade, gather_last, makhoul_order
from .activations import activation_gain, is_elementwise, resolve_activation
from .base import StructuredLayer, register_layer

__all__ = ["ACDC"]

_HALF = (torch.float16, torch.bfloat16)


def _inverse(index: np.ndarray, size: int) -> np.ndarray:
    """``inverse[index[j]] = j`` for ``index[j] >= 0``, −1 elsewhere; length ``size``."""
    inverse = np.full(size, -1, dtype=np.int64)
    valid = index >= 0
    inverse[index[valid]] = np.nonzero(valid)[0]
    return inverse



@register_layer("acdc")
class ACDC(StructuredLayer):
    r"""A cascade of ``depth`` ACDC blocks, ``y = B_K … π σ(B_2 π σ(B_1 x)) + bias``.

    Each block is ``B_i x = C⁻¹ diag(D_i) C diag(A_i) x`` with ``C`` the orthonormal DCT-II; between blocks an
    optional fixed random permutation ``π_i`` and activation ``σ``. Size ``N = max(in_features,
    out_features)``: the input is zero-padded to ``N`` and the output truncated to ``out_features``.

    The whole cascade runs in Makhoul's reordered domain (see :mod:`structlin.transforms.acdc`): one rfft and
    one irfft per block, a per-bin 2×2 map for ``C⁻¹ D C``, one gather in, one out and one per permutation.
    Without an activation, or with ReLUs, the cascade is one custom op (``structlin::acdc_cascade``); another
    activation splits it into one op per block. Each block saves only its input for backward; an activation
    other than ReLU saves what its own backward needs too.

    Args:
        in_features, out_features: sizes of the last dimension of input and output.
        depth: number of blocks: an int, or a depth strategy (``"log2"`` is ``⌈log₂ N⌉``; see
            :mod:`structlin.strategies.depth`).
        bias: learn an output bias of shape ``(out_features,)``, initialized to zero.
        init: initialization of ``A`` and ``D``: ``"paper"`` (``N(1, 0.01²)``), ``"identity"``,
            ``"variance-preserving"`` (keeps the mean square through the activation), or an
            :class:`~structlin.strategies.init.ACDCInit` object.
        permute: put a fixed random permutation between blocks (drawn from torch's global RNG at construction;
            stored in the ``state_dict`` as the buffer ``permutations``, shape ``(depth - 1, N)``).
        activation: ``None``, a name (``"relu"``, ``"gelu"``, ``"tanh"``, …) or an ``nn.Module``, applied
            between blocks (not after the last).

    Shape:
        input ``(..., in_features)`` → output ``(..., out_features)``.

    Attributes:
        A, D: ``(depth, N)`` parameters, the diagonals in natural (not reordered) order.
        bias: ``(out_features,)`` or ``None``.
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
        factory = {"device": device, "dtype": dtype}
        self.size = n = max(in_features, out_features)
        self.depth = resolve_depth(depth, n)
        self.init = resolve_acdc_init(init)
        self.activation = resolve_activation(activation)
        self.A = nn.Parameter(torch.empty(self.depth, n, **factory))
        self.D = nn.Parameter(torch.empty(self.depth, n, **factory))
        self.bias = nn.Parameter(torch.empty(out_features, **factory)) if bias else None
        if permute and self.depth > 1:
            perms = torch.stack([torch.randperm(n) for _ in range(self.depth - 1)])
            self.register_buffer("permutations", perms.to(device))
        else:
            self.register_buffer("permutations", None)
        self._build_indices()
        self.reset_parameters()

    def _rebuild_derived_buffers(self) -> None:
        self._build_indices()

    def _build_indices(self) -> None:
        """Derived, non-persistent buffers: every gather index of the cascade and the bin constants."""
        n, device = self.size, self.A.device
        order = makhoul_order(n)
        unorder = np.argsort(order)
        in_index = np.where(order < self.in_features, order, -1)
        out_index = unorder[: self.out_features]
        indices = {
            "_order": order,
            "_in_index": in_index,
            "_in_inverse": _inverse(in_index, self.in_features),
            "_out_index": out_index,
            "_out_inverse": _inverse(out_index, n),
            "_unorder": unorder,
        }
        if self.permutations is not None:
            perm_index = np.stack([unorder[p[order]] for p in self.permutations.cpu().numpy()])
            indices["_perm_index"] = perm_index
            indices["_perm_inverse"] = np.argsort(perm_index, axis=1)
        for name, value in indices.items():
            self.register_buffer(name, torch.as_tensor(value, dtype=torch.int64, device=device), persistent=False)

    @property
    def _fused_relu(self) -> bool:
        """ReLUs between blocks run inside the cascade op (other activations run between one-block ops)."""
        return isinstance(self.activation, nn.ReLU)

    @property
    def _compute_dtype(self) -> torch.dtype:
        """float32 for half-precision parameters (the FFTs need it), else the parameters' dtype."""
        return torch.float32 if self.A.dtype in _HALF else self.A.dtype

    def reset_parameters(self) -> None:
        """Redraw ``A`` and ``D`` with the init strategy and zero the bias (the permutations stay)."""
        with torch.no_grad():
            self.init.init_(self.A, self.D, activation_gain(self.activation))
            if self.bias is not None:
                self.bias.zero_()

    def _activate(self, v: torch.Tensor) -> torch.Tensor:
        if is_elementwise(self.activation):
            return self.activation(v)  # commutes with the reordering
        x = gather_last(v, self._unorder, self._order)
        return gather_last(self.activation(x), self._order, self._unorder)

    def _cascade(self, x: torch.Tensor) -> torch.Tensor:
        compute = self._compute_dtype
        A, D = self.A.to(compute), self.D.to(compute)
        gather_in, gather_out = (self._in_index, self._in_inverse), (self._out_index, self._out_inverse)
        if self.activation is None or self._fused_relu:  # the whole cascade in one op
            perms = (self._perm_index, self._perm_inverse) if self.permutations is not None else None
            return acdc_cascade(x, A, D, gather_in=gather_in, permutations=perms, gather_out=gather_out,
                                relu=self._fused_relu)
        # one block at a time; unbind, not A[i : i + 1]: its backward stacks the k row gradients once instead of
        # summing k full (k, ·) ones
        last = self.depth - 1
        for i, (a, d) in enumerate(zip(A.unbind(0), D.unbind(0))):
            x = acdc_cascade(x, a.unsqueeze(0), d.unsqueeze(0), gather_in=gather_in if i == 0 else None,
                             gather_out=gather_out if i == last else None)
            if i < last:
                if self.permutations is not None:
                    x = gather_last(x, self._perm_index[i], self._perm_inverse[i])
                x = self._activate(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., in_features)`` → ``(..., out_features)``."""
        self._check_input(x)
        params, compute = self.A.dtype, self._compute_dtype
        if x.dtype != params and not (x.dtype in _HALF and compute == torch.float32):
            raise TypeError(f"ACDC with {params} parameters expects {params} inputs (or float16/bfloat16), got {x.dtype}")
        if x.device != self.A.device:
            raise ValueError(f"ACDC's parameters are on {self.A.device}, so inputs must be too; got {x.device}")
        y = self._cascade(x.to(compute))
        if self.bias is not None:
            y = y + self.bias.to(compute)
        return y.to(x.dtype)

    def to_dense(self) -> torch.Tensor:
        """The ``(out_features, in_features)`` matrix ``W`` with ``forward(x) == x @ W.T + bias``."""
        if self.activation is not None:
            raise TypeError("ACDC with an activation between blocks is not a linear map, so it has no dense weight")
        with torch.no_grad():
            eye = torch.eye(self.in_features, dtype=self._compute_dtype, device=self.A.device)
            return self._cascade(eye).T.contiguous().to(self.A.dtype)

    def cost(self, batch_shape=()) -> Cost:
        """Analytic cost for inputs ``(*batch_shape, in_features)``; see :mod:`structlin.costs`."""
        rows, n, k = self._rows(batch_shape), self.size, self.depth
        itemsize = self.A.element_size()
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
