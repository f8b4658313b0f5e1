"""The low-rank layer ``y = U V x + b``: a rank-``r`` factorization of a dense weight."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..costs import Cost
from ._checks import check_compute_dtype, check_rank
from .base import StructuredLayer, register_layer

__all__ = ["LowRank"]


@register_layer("lowrank")
class LowRank(StructuredLayer):
    r"""A rank-``r`` linear map, ``y = U (V x) + bias``.

    Args:
        in_features, out_features: sizes of the last dimension of input and output.
        rank: inner dimension ``r`` (any positive int; ``r ≥ min(in, out)`` is a full-rank dense map in
            factored form).
        bias: learn an output bias of shape ``(out_features,)``.
        device, dtype: of the parameters; dtype float16, bfloat16, float32 or float64 (``TypeError`` otherwise).

    Initialization keeps ``nn.Linear``'s scale: ``V ~ U(−1/√in, 1/√in)`` and ``U ~ U(−√(3/r), √(3/r))``, so
    each entry of ``U V`` has variance ``1/(3·in)``, the variance of an ``nn.Linear`` weight entry; the bias is
    drawn as ``nn.Linear``'s, ``U(−1/√in, 1/√in)``.

    Shape:
        input ``(..., in_features)`` → output ``(..., out_features)``.

    Attributes:
        U: ``(out_features, rank)``. V: ``(rank, in_features)``. bias: ``(out_features,)`` or ``None``.

    ``to_dense()`` is ``U @ V``. :meth:`from_linear` truncates an ``nn.Linear``'s weight by SVD (the best rank-r
    approximation in Frobenius norm), so it is exact only when ``rank ≥ rank(W)``.
    """

    def __init__(self, in_features: int, out_features: int, rank: int, *, bias: bool = True, device=None, dtype=None):
        super().__init__(in_features, out_features)
        factory = self.factory_kwargs(device, dtype)
        self.rank = check_rank(rank)
        self.U = nn.Parameter(torch.empty(out_features, rank, **factory))
        self.V = nn.Parameter(torch.empty(rank, in_features, **factory))
        self.bias = nn.Parameter(torch.empty(out_features, **factory)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Redraw ``U``, ``V`` and the bias so that ``U V`` has ``nn.Linear``'s entry variance."""
        self.prepare_reset()
        bound_in = 1.0 / math.sqrt(self.in_features)
        with torch.no_grad():
            self.V.uniform_(-bound_in, bound_in)
            self.U.uniform_(-math.sqrt(3.0 / self.rank), math.sqrt(3.0 / self.rank))
            if self.bias is not None:
                self.bias.uniform_(-bound_in, bound_in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., in_features)`` → ``(..., out_features)``."""
        self._check_input(x)
        check_compute_dtype(self, x, self.U.dtype, self.U.device)
        y = F.linear(F.linear(x.to(self.U.dtype), self.V), self.U, self.bias)
        return y.to(x.dtype)

    def to_dense(self) -> torch.Tensor:
        """The ``(out_features, in_features)`` matrix ``U @ V``."""
        with torch.no_grad():
            return self.U @ self.V

    def cost(self, batch_shape=()) -> Cost:
        """Two matmuls forward (``2·r·(in + out)`` FLOPs per row) and the bias add (``out`` per row); backward four
        matmuls (the input and weight gradients of each) and the bias gradient, the output gradient summed over
        the rows (``(rows − 1)·out``).

        Autograd saves the input ``x`` and the inner activation ``V x``.
        """
        rows, r = self._rows(batch_shape), self.rank
        bias = self.out_features if self.bias is not None else 0
        matmul = 2 * r * (self.in_features + self.out_features)
        saved = rows * (self.in_features + r) * self.U.element_size()
        params = r * (self.in_features + self.out_features) + bias
        return Cost(params=params, forward_flops=rows * (matmul + bias),
                    backward_flops=rows * 2 * matmul + (rows - 1) * bias, saved_bytes=saved)

    @classmethod
    def from_linear(cls, linear: nn.Linear, rank: int | None = None, **options) -> "LowRank":
        """The best rank-``rank`` approximation of ``linear`` by truncated SVD: ``U = U_r √S_r``, ``V = √S_r V_rᵀ``.

        The SVD runs in float64; the result keeps ``linear``'s device and dtype and copies its bias exactly.
        ``rank`` must be at most ``min(in_features, out_features)``.
        """
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"LowRank.from_linear expects an nn.Linear, got {type(linear).__name__}")
        if rank is None:
            raise ValueError("LowRank.from_linear needs rank=<int>: the rank of the truncated SVD")
        check_rank(rank)
        out_features, in_features = linear.weight.shape
        if rank > min(in_features, out_features):
            raise ValueError(f"rank must be at most min(in_features, out_features) = {min(in_features, out_features)} "
                             f"for from_linear, got {rank}")
        weight = linear.weight.detach()
        layer = cls(in_features, out_features, rank, bias=linear.bias is not None, device=weight.device,
                    dtype=weight.dtype, **options)
        u, s, vh = torch.linalg.svd(weight.double(), full_matrices=False)
        root = s[:rank].sqrt()
        with torch.no_grad():
            layer.U.copy_(u[:, :rank] * root)
            layer.V.copy_(root[:, None] * vh[:rank])
            if layer.bias is not None:
                layer.bias.copy_(linear.bias.detach())
        return layer

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, rank={self.rank}, bias={self.bias is not None}"
