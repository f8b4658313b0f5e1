"""The Fastfood layer: stacked blocks ``S H G Π H B`` (Le, Sarlós & Smola 2013; adaptive: Yang et al. 2015)."""

from __future__ import annotations

import math
from typing import Iterable

import torch
from torch import nn

from ..costs import Cost, fastfood_backward_flops, fastfood_flops
from ..strategies.fastfood_init import FastfoodInit, resolve_fastfood_init
from ..transforms.fastfood import fastfood
from ._checks import check_compute_dtype, compute_dtype
from .base import StructuredLayer, register_layer

__all__ = ["Fastfood"]

_DIAGONALS = ("S", "G", "B")


def _resolve_learn(learn) -> tuple[str, ...]:
    if isinstance(learn, str):
        learn = (learn,)
    try:
        names = tuple(learn)
    except TypeError:
        raise ValueError(f"learn must be a sequence of names from {_DIAGONALS}, got {learn!r}") from None
    for name in names:
        if name not in _DIAGONALS:
            raise ValueError(f"learn entries must be among {_DIAGONALS} (Π and H are fixed), got {name!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"learn names a diagonal twice: {names!r}")
    return tuple(name for name in _DIAGONALS if name in names)


def _inverse_rows(permutations: torch.Tensor) -> torch.Tensor:
    """``(blocks, d)`` → the row-wise inverse permutations, ``inverse[j, permutations[j, k]] = k``."""
    return torch.argsort(permutations, dim=1)


@register_layer("fastfood")
class Fastfood(StructuredLayer):
    r"""Stacked Fastfood blocks: ``y = [V_1 x̄; V_2 x̄; …][:out_features] + bias`` with ``x̄ = pad(x)``.

    Each block is ``V_j = S_j H̃ G_j Π_j H̃ B_j`` with ``H̃ = H_d/√d`` the orthonormal Walsh–Hadamard matrix
    (Sylvester order, as ``scipy.linalg.hadamard(d)/√d``), ``Π_j`` a fixed random permutation
    (``(Π_j v)[k] = v[permutations[j, k]]``) and ``B_j``, ``G_j``, ``S_j`` diagonals. ``d`` is the smallest power
    of two ``≥ in_features`` (the input is zero-padded to ``d``); ``⌈out_features / d⌉`` independent blocks are
    stacked and the output truncated to ``out_features``. The paper's ``V = (1/(σ√d)) S' H G Π H B`` is this
    map with ``S = (√d/σ) S'`` (see :class:`~structlin.strategies.fastfood_init.Paper`).

    The whole layer is one fused op (:func:`structlin.transforms.fastfood.fastfood`): per block two FWHTs and
    three O(d) passes, the permutation fused with the scaling by ``G``. Only the input is saved for backward.

    The inverse permutations the backward needs are derived from ``permutations`` on demand and follow it: an
    in-place edit, a load or a move of the buffer is seen by the next call, forward and backward. A value whose rows
    are not permutations of ``0 … d−1`` (or not int64 of shape ``(blocks, d)``) raises a ``ValueError`` naming the
    buffer, at the next call after an edit and before anything is copied by ``load_state_dict``.

    Float16/bfloat16 parameters compute in float32 (the unnormalised transforms grow values by up to ``d``, past
    float16's range) and return the input's dtype: the output is finite wherever the float32 result fits it.

    Args:
        in_features, out_features: sizes of the last dimension of input and output.
        bias: learn an output bias of shape ``(out_features,)``, initialized to zero.
        learn: which diagonals are trained, any of ``("S", "G", "B")`` (the default, adaptive Fastfood as in
            Deep Fried Convnets); ``()`` gives the non-adaptive random map. The others are fixed buffers, kept
            in the ``state_dict`` like ``permutations``.
        init: ``"paper"`` (Gaussian-like blocks at unit gain, the default), ``"orthogonal"`` (exactly orthogonal
            blocks), or a :class:`~structlin.strategies.fastfood_init.FastfoodInit` object such as
            ``Paper(sigma=…)``.
        device, dtype: of the diagonals and bias; dtype float16, bfloat16, float32 or float64 (``TypeError``
            otherwise). ``device="meta"`` builds without data (see :class:`~structlin.StructuredLayer`).

    Shape:
        input ``(..., in_features)`` → output ``(..., out_features)``.

    Attributes:
        S, G, B: ``(blocks, d)`` parameters or buffers.
        permutations: ``(blocks, d)`` int64 buffer, each row a permutation of ``0 … d−1``.
        bias: ``(out_features,)`` or ``None``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        bias: bool = True,
        learn: Iterable[str] = _DIAGONALS,
        init: str | FastfoodInit = "paper",
        device=None,
        dtype=None,
    ):
        super().__init__(in_features, out_features)
        factory = self.factory_kwargs(device, dtype)
        self.size = d = 1 << (in_features - 1).bit_length()
        self.blocks = math.ceil(out_features / d)
        self.learn = _resolve_learn(learn)
        self.init = resolve_fastfood_init(init)
        for name in _DIAGONALS:
            value = torch.empty(self.blocks, d, **factory)
            if name in self.learn:
                setattr(self, name, nn.Parameter(value))
            else:
                self.register_buffer(name, value)
        self.bias = nn.Parameter(torch.empty(out_features, **factory)) if bias else None
        self.register_permutations("permutations", self.blocks, d, device=self.S.device)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Redraw ``B``, ``G`` and ``S`` (learned or fixed) with the init strategy and zero the bias. The
        permutations stay once drawn (they are drawn here only when they hold no values: at construction or after
        ``to_empty()``)."""
        self.prepare_reset()
        with torch.no_grad():
            self.init.init_(self.B, self.G, self.S)
            if self.bias is not None:
                self.bias.zero_()

    def _run(self, rows: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """The fused op on ``(rows, in_features)`` of the compute dtype, every diagonal cast to it."""
        B, G, S = self.B, self.G, self.S
        if S.dtype != rows.dtype:  # half parameters: differentiable casts, so gradients reach them in their dtype
            B, G, S = B.to(rows.dtype), G.to(rows.dtype), S.to(rows.dtype)
            bias = None if bias is None else bias.to(rows.dtype)
        inverse = self.derived("permutations", _inverse_rows)
        return fastfood(rows, B, G, S, bias, self.permutations, inverse, self.out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., in_features)`` → ``(..., out_features)``."""
        self._check_input(x)
        compute = compute_dtype(self.S.dtype)
        check_compute_dtype(self, x, self.S.dtype, self.S.device, compute)
        y = self._run(x.reshape(-1, self.in_features).to(compute), self.bias)
        return y.view(*x.shape[:-1], self.out_features).to(x.dtype)

    def to_dense(self) -> torch.Tensor:
        """The ``(out_features, in_features)`` matrix ``W`` with ``forward(x) == x @ W.T + bias``."""
        with torch.no_grad():
            eye = torch.eye(self.in_features, dtype=compute_dtype(self.S.dtype), device=self.S.device)
            return self._run(eye, None).T.contiguous().to(self.S.dtype)

    def cost(self, batch_shape=()) -> Cost:
        """Analytic cost for inputs ``(*batch_shape, in_features)``; the backward counts the gradients of the
        input, the learned diagonals and the bias (see :mod:`structlin.costs`)."""
        rows, d, k = self._rows(batch_shape), self.size, self.blocks
        shape = (rows, self.in_features, d, k, self.out_features)
        has_bias = self.bias is not None
        needs = (True, "B" in self.learn, "G" in self.learn, "S" in self.learn, has_bias)
        params = len(self.learn) * k * d + (self.out_features if has_bias else 0)
        return Cost(
            params=params,
            forward_flops=fastfood_flops(*shape, bias=has_bias),
            backward_flops=fastfood_backward_flops(*shape, needs=needs),
            saved_bytes=rows * self.in_features * (torch.finfo(compute_dtype(self.S.dtype)).bits // 8),
        )

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, size={self.size}, blocks={self.blocks}, bias={self.bias is not None}, "
            f"learn={self.learn}, init={self.init!r}"
        )
