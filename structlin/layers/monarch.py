"""The Monarch layer ``y = L P R x + b``: two block-diagonal factors around a fixed stride permutation (Dao et al.,
ICML 2022), run as two batched matmuls."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..costs import Cost
from ._checks import check_compute_dtype, check_rank
from .base import StructuredLayer, register_layer

__all__ = ["Monarch", "default_nblocks", "monarch_sizes", "hidden_pairs"]


def default_nblocks(in_features: int, out_features: int) -> int:
    """The largest power of two ``k`` with ``k² ≤ min(in_features, out_features)``: about ``√n`` blocks (the
    paper's choice for an ``n × n`` layer, ``O(n^1.5)`` parameters), a divisor of the usual power-of-two widths, and
    small enough that every output reads every input (``q ≥ k`` in :func:`monarch_sizes`)."""
    smaller = min(in_features, out_features)
    return 1 << ((math.isqrt(smaller)).bit_length() - 1)


def monarch_sizes(in_features: int, out_features: int, nblocks: int) -> tuple[int, int, int, int]:
    """``(k, p, q, s)`` of a Monarch layer: ``k = nblocks`` blocks per factor, input blocks of ``p = ⌈in/k⌉``,
    output blocks of ``s = ⌈out/k⌉`` and ``q = min(p, s)`` hidden units per block (``R`` is ``(k, q, p)``, ``L``
    ``(k, s, q)``)."""
    p, s = -(-in_features // nblocks), -(-out_features // nblocks)
    return nblocks, p, min(p, s), s


def hidden_pairs(k: int, q: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where each of the ``k·q`` hidden units sits in the two factors, int64 ``(k·q,)`` each, by hidden index
    ``h`` (``R``'s output order): ``R`` block ``j = h // q`` and row ``c = h % q`` of it; ``L`` block
    ``i = h % k`` and column ``r = h // k`` of it."""
    h = torch.arange(k * q)
    return h // q, h % q, h % k, h // k


@register_layer("monarch")
class Monarch(StructuredLayer):
    r"""A Monarch matrix, ``y = L P R x̄ + bias``, truncated to ``out_features`` (Dao et al., ICML 2022).

    ``R`` is block-diagonal with ``k = nblocks`` blocks ``R_j`` of shape ``(q, p)``; ``L`` is block-diagonal with
    ``k`` blocks ``L_i`` of shape ``(s, q)``; ``P`` is the fixed stride permutation of the ``k·q`` hidden units
    ("reshape-transpose"): hidden unit ``h`` (row ``h % q`` of ``R``'s block ``h // q``) is column ``h // k`` of
    ``L``'s block ``h % k``. So ``L`` block ``i`` reads the hidden units ``i, i + k, i + 2k, …``, which (when
    ``q ≥ k``) come from every block of ``R``: every output depends on every input. For ``n = m²`` and
    ``k = m`` this is the paper's square Monarch matrix ``P L Pᵀ R`` up to the fixed order of the outputs
    (``P L Pᵀ R = P · (L Pᵀ R)``; here outputs stay in ``L``'s block order), each output block × input block
    of the dense matrix a rank-1 product ``L_i[:, j] R_j[i, :]``. Sizes: ``p = ⌈in/k⌉``, ``s = ⌈out/k⌉``,
    ``q = min(p, s)`` (see :func:`monarch_sizes`).

    Padding rule: the input is zero-padded from ``in_features`` to ``k·p`` and the output truncated from ``k·s``
    to ``out_features``; the entries of ``R``'s last columns and ``L``'s last rows that meet the padding are
    stored (and counted as parameters) but never change the output, so their gradient is zero.

    The forward is two batched matmuls (``torch.bmm`` over the ``k`` blocks) and one copy of the hidden units
    for the permutation; autograd saves the (padded) input and the permuted hidden units.

    Args:
        in_features, out_features: sizes of the last dimension of input and output.
        nblocks: blocks per factor, a positive int (default :func:`default_nblocks`, about
            ``√min(in, out)``). Parameters ``k·q·(p + s)``: ``2n²/k`` for an ``n → n`` layer with ``k | n``,
            from ``2n²`` (``k = 1``, a dense product of two ``n × n`` matrices) to ``2n^1.5`` (``k = √n``). With
            ``q < k`` some output blocks do not see some input blocks (those blocks of the dense matrix are 0).
        bias: learn an output bias of shape ``(out_features,)``.
        device, dtype: of the parameters; dtype float16, bfloat16, float32 or float64 (``TypeError`` otherwise).

    Initialization: ``R ~ U(−1/√p, 1/√p)`` (each block a fan-in-``p`` ``nn.Linear``) and ``L ~ U(−√(3/q),
    √(3/q))`` (variance ``1/q``, as :class:`~structlin.LowRank`'s ``U``), so each entry of the dense matrix,
    a sum of ``q/k`` products on average, has variance ``1/(3·k·p)`` — ``nn.Linear``'s ``1/(3·in)`` when ``k``
    divides ``in``; the bias is drawn as ``nn.Linear``'s, ``U(−1/√in, 1/√in)``.

    Shape:
        input ``(..., in_features)`` → output ``(..., out_features)``.

    Attributes:
        R: ``(k, q, p)``. L: ``(k, s, q)``. bias: ``(out_features,)`` or ``None``.

    :meth:`from_linear` is the paper's closed-form projection (a truncated SVD per block pair), exact when the
    matrix is a Monarch matrix of this shape.
    """

    def __init__(self, in_features: int, out_features: int, nblocks: int | None = None, *, bias: bool = True,
                 device=None, dtype=None):
        super().__init__(in_features, out_features)
        factory = self.factory_kwargs(device, dtype)
        if nblocks is None:
            nblocks = default_nblocks(in_features, out_features)
        k, p, q, s = monarch_sizes(in_features, out_features, check_rank(nblocks, "nblocks"))
        self.nblocks = k
        self.R = nn.Parameter(torch.empty(k, q, p, **factory))
        self.L = nn.Parameter(torch.empty(k, s, q, **factory))
        self.bias = nn.Parameter(torch.empty(out_features, **factory)) if bias else None
        self.reset_parameters()

    @property
    def sizes(self) -> tuple[int, int, int, int]:
        """``(k, p, q, s)``: blocks, input block size, hidden units per block, output block size."""
        return monarch_sizes(self.in_features, self.out_features, self.nblocks)

    def reset_parameters(self) -> None:
        """Redraw ``R``, ``L`` and the bias (see the class docstring for the scales)."""
        self.prepare_reset()
        _, p, q, _ = self.sizes
        with torch.no_grad():
            self.R.uniform_(-1.0 / math.sqrt(p), 1.0 / math.sqrt(p))
            self.L.uniform_(-math.sqrt(3.0 / q), math.sqrt(3.0 / q))
            if self.bias is not None:
                bound = 1.0 / math.sqrt(self.in_features)
                self.bias.uniform_(-bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., in_features)`` → ``(..., out_features)``."""
        self._check_input(x)
        R, L = self.R, self.L
        check_compute_dtype(self, x, R.dtype, R.device)
        k, p, q, s = self.sizes
        lead = x.shape[:-1]
        h = x.to(R.dtype).reshape(-1, self.in_features)
        rows = h.shape[0]
        if k * p != self.in_features:
            h = F.pad(h, (0, k * p - self.in_features))
        # every activation operand of bmm contiguous (torch's CPU bmm copies each block of some strided batches
        # separately); the weights are read transposed, as F.linear reads nn.Linear's
        h = h.reshape(rows, k, p).transpose(0, 1).contiguous()  # (k, rows, p)
        h = torch.bmm(h, R.transpose(1, 2))  # (k, rows, q): R's blocks; hidden unit j·q + c at [j, :, c]
        h = _stride_permutation(h, k, q)  # (k, rows, q): L's block i reads the hidden units i, i + k, i + 2k, …
        y = torch.bmm(h, L.transpose(1, 2)).transpose(0, 1).reshape(rows, k * s)  # (rows, k·s)
        y = y[:, : self.out_features]
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*lead, self.out_features).to(x.dtype)

    def to_dense(self) -> torch.Tensor:
        """The ``(out_features, in_features)`` matrix ``L P R``, cropped to the unpadded rows and columns."""
        k, _, q, _ = self.sizes
        j, c, i, r = hidden_pairs(k, q)
        with torch.no_grad():
            rows_of_r = torch.block_diag(*self.R)  # (k·q, k·p), hidden units in R's order
            in_l_order = (i * q + r).argsort()  # L's column order → the hidden unit it reads
            dense = torch.block_diag(*self.L) @ rows_of_r[in_l_order.to(self.R.device)]
            return dense[: self.out_features, : self.in_features]

    def cost(self, batch_shape=()) -> Cost:
        """Two batched matmuls forward (``2·k·q·(p + s)`` FLOPs per row) and the bias add (``out`` per row);
        backward the input and weight gradients of each matmul (twice the forward) and the bias gradient, the
        output gradient summed over the rows (``(rows − 1)·out``). Padding, permutation and truncation move data.

        Autograd saves the (padded) input, ``k·p`` per row, and the permuted hidden units, ``k·q`` per row.
        """
        rows = self._rows(batch_shape)
        k, p, q, s = self.sizes
        bias = self.out_features if self.bias is not None else 0
        matmul = 2 * k * q * (p + s)
        params = k * q * (p + s) + bias
        saved = rows * k * (p + q) * self.R.element_size()
        return Cost(params=params, forward_flops=rows * (matmul + bias),
                    backward_flops=rows * 2 * matmul + max(rows - 1, 0) * bias, saved_bytes=saved)

    @classmethod
    def from_linear(cls, linear: nn.Linear, nblocks: int | None = None, **options) -> "Monarch":
        """The Frobenius-nearest Monarch matrix to ``linear``'s weight, in closed form (Dao et al., §3.3).

        Each pair (output block ``i``, input block ``j``) of the dense matrix is ``L_i[:, H] R_j[H, :]`` for the
        hidden units ``H`` that ``R``'s block ``j`` hands to ``L``'s block ``i``, and no parameter appears in two
        pairs; so the nearest Monarch matrix is, pair by pair, the truncated SVD of rank ``|H|`` of that
        ``(s, p)`` block (Eckart–Young), split as ``U√Σ`` into ``L`` and ``√Σ Vᵀ`` into ``R``. The relative error is
        ``√(Σ dropped σ²) / ‖W‖_F`` (a Monarch matrix is reproduced exactly); padded rows and columns are left out
        of the fit. The SVDs run in float64 (batched over the ``k²`` pairs); the result keeps ``linear``'s device
        and dtype and copies its bias exactly.
        """
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"Monarch.from_linear expects an nn.Linear, got {type(linear).__name__}")
        weight = linear.weight.detach()
        out_features, in_features = weight.shape
        layer = cls(in_features, out_features, nblocks, bias=linear.bias is not None, device=weight.device,
                    dtype=weight.dtype, **options)
        k, p, q, s = layer.sizes
        padded = torch.zeros(k * s, k * p, dtype=torch.float64, device=weight.device)
        padded[:out_features, :in_features] = weight.double()
        blocks = padded.view(k, s, k, p).transpose(1, 2)  # (i, j, s, p)
        u, sigma, vh = torch.linalg.svd(blocks, full_matrices=False)  # zero padding leaves the fit of the rest alone
        j, c, i, r = hidden_pairs(k, q)
        slot = _slots(i * k + j)  # which singular triple of its pair each hidden unit holds
        keep = (slot < min(s, p)).to(torch.float64)
        slot = slot.clamp(max=min(s, p) - 1)
        root = sigma[i, j, slot].sqrt() * keep  # (k·q,)
        L = torch.zeros(k, s, q, dtype=torch.float64, device=weight.device)
        R = torch.zeros(k, q, p, dtype=torch.float64, device=weight.device)
        L[i, :, r] = u[i, j, :, slot] * root[:, None]
        R[j, c, :] = vh[i, j, slot, :] * root[:, None]
        with torch.no_grad():
            layer.L.copy_(L)
            layer.R.copy_(R)
            if layer.bias is not None:
                layer.bias.copy_(linear.bias.detach())
        return layer

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, nblocks={self.nblocks}, bias={self.bias is not None}"


def _stride_permutation(h: torch.Tensor, k: int, q: int) -> torch.Tensor:
    """``(k, rows, q)`` hidden units in ``R``'s order (unit ``f = j·q + c`` at ``[j, :, c]``) → ``(k, rows, q)``
    contiguous in ``L``'s order (unit ``f`` at ``[f % k, :, f // k]``). When ``k`` divides ``q`` it is a transpose
    of ``(j, c // k)`` with ``c % k``, one copy; otherwise it goes through the flat order, two."""
    rows = h.shape[1]
    if q % k == 0:
        return h.view(k, rows, q // k, k).permute(3, 1, 0, 2).contiguous().view(k, rows, q)
    return h.transpose(0, 1).reshape(rows, q, k).permute(2, 0, 1).contiguous()


def _slots(pair: torch.Tensor) -> torch.Tensor:
    """For each entry, how many earlier entries have the same value: the rank slot of a hidden unit in its
    (output block, input block) pair, in hidden order."""
    order = pair.argsort(stable=True)
    sorted_pairs = pair[order]
    first = torch.searchsorted(sorted_pairs, sorted_pairs, right=False)
    slot = torch.empty_like(pair)
    slot[order] = torch.arange(pair.numel()) - first
    return slot
