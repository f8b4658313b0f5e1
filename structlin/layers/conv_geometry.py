"""How a convolution reads its input (kernel, stride, padding, dilation, groups, padding mode), computed exactly
as ``nn.Conv1d``/``nn.Conv2d``/``nn.Conv3d`` compute it, and the geometries a quadratic convolution derives from
the layer's: a dilated (*atrous*) one on the same output grid, and the 1×1 one of the output grid.

Arguments are checked and normalised by the ``nn.Conv*`` class itself (built on the meta device), so they mean
exactly what they mean there and bad ones get PyTorch's own errors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from ..costs import Cost

__all__ = ["ConvGeometry", "CONV_CLASSES"]

#: spatial dims → the ``nn.Conv*`` class
CONV_CLASSES = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def _tuple(value, dims: int, name: str) -> tuple[int, ...]:
    """``value`` (an int or ``dims`` ints) as a ``dims``-tuple of positive ints, or a ``ValueError`` naming it."""
    items = (value,) * dims if isinstance(value, int) and not isinstance(value, bool) else value
    if (not isinstance(items, (tuple, list)) or len(items) != dims
            or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in items)):
        raise ValueError(f"{name} must be a positive int or {dims} positive ints, got {value!r}")
    return tuple(items)


@dataclass(frozen=True)
class ConvGeometry:
    """Everything about one convolution but its weights.

    Attributes:
        dims: spatial dimensions (1, 2 or 3).
        kernel_size, stride, dilation: ``dims``-tuples.
        groups: input and output channels split into this many groups.
        padding_mode: ``"zeros"``, ``"reflect"``, ``"replicate"`` or ``"circular"``.
        pads: the padding of each side in ``F.pad``'s order (last dimension first, left then right), as
            ``nn.Conv*``'s ``_reversed_padding_repeated_twice``.
        padding: what ``F.conv*`` is given in the ``"zeros"`` mode (a tuple, or ``"same"``/``"valid"`` as the user
            gave it to ``nn.Conv*``); ``None`` when the padding is uneven and ``F.pad`` does it first.
    """

    dims: int
    kernel_size: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    groups: int
    padding_mode: str
    pads: tuple[int, ...]
    padding: tuple[int, ...] | str | None

    @classmethod
    def of(cls, conv: nn.Module) -> "ConvGeometry":
        """The geometry of an ``nn.Conv1d``/``nn.Conv2d``/``nn.Conv3d`` (its normalised attributes)."""
        dims = len(conv.kernel_size)
        return cls(dims=dims, kernel_size=tuple(conv.kernel_size), stride=tuple(conv.stride),
                   dilation=tuple(conv.dilation), groups=conv.groups, padding_mode=conv.padding_mode,
                   pads=tuple(conv._reversed_padding_repeated_twice), padding=conv.padding)

    @classmethod
    def build(cls, dims: int, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
              groups: int = 1, padding_mode: str = "zeros") -> "ConvGeometry":
        """The geometry ``nn.Conv{dims}d`` builds from these arguments (checked by it: PyTorch's errors)."""
        conv = CONV_CLASSES[dims](in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                                  dilation=dilation, groups=groups, bias=False, padding_mode=padding_mode,
                                  device="meta")
        return cls.of(conv)

    # ------------------------------------------------------------------------------------------ derived geometries
    def sides(self, dim: int) -> tuple[int, int]:
        """``(before, after)`` padding of spatial dimension ``dim`` (0 = the first spatial dimension)."""
        index = 2 * (self.dims - 1 - dim)
        return self.pads[index], self.pads[index + 1]

    def atrous(self, dilation) -> "ConvGeometry":
        """The same kernel with another ``dilation``, padded so that its output grid is this geometry's: the
        padding of each dimension grows by ``(dilation' − dilation)·(k − 1)``, split evenly between the sides
        (the extra element, if odd, after), so each output reads a window centred as this geometry's is (to half
        an element). ``ValueError`` when that would need a negative padding."""
        dilation = _tuple(dilation, self.dims, "quadratic_dilation")
        if dilation == self.dilation:
            return self
        pads = [0] * (2 * self.dims)
        for dim in range(self.dims):
            extra = (dilation[dim] - self.dilation[dim]) * (self.kernel_size[dim] - 1)
            before, after = self.sides(dim)
            index = 2 * (self.dims - 1 - dim)
            pads[index], pads[index + 1] = before + extra // 2, after + extra - extra // 2
        if min(pads) < 0:
            raise ValueError(f"quadratic_dilation={dilation} would need a negative padding to keep the output grid of "
                             f"dilation={self.dilation} with padding {self.pads}; use a dilation at least as large")
        even = all(pads[i] == pads[i + 1] for i in range(0, len(pads), 2))
        padding = tuple(pads[2 * (self.dims - 1 - d)] for d in range(self.dims)) if even else None
        return replace(self, dilation=dilation, pads=tuple(pads), padding=padding)

    def ungrouped(self) -> "ConvGeometry":
        """This geometry with ``groups = 1`` (every output reads every input channel)."""
        return replace(self, groups=1)

    def pointwise(self) -> "ConvGeometry":
        """The 1×1 convolution of the output grid: stride 1, no padding, no groups."""
        ones, zeros = (1,) * self.dims, (0,) * self.dims
        return ConvGeometry(dims=self.dims, kernel_size=ones, stride=ones, dilation=ones, groups=1,
                            padding_mode="zeros", pads=(0,) * (2 * self.dims), padding=zeros)

    # ------------------------------------------------------------------------------------------ compute
    @property
    def pads_first(self) -> bool:
        """Whether ``F.pad`` runs before the convolution (a padding mode other than zeros, or uneven zeros)."""
        return self.padding_mode != "zeros" or self.padding is None

    def conv(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """``x`` ``(N, C_in, *spatial)`` convolved with ``weight`` ``(C_out, C_in/groups, *kernel)``, as
        ``nn.Conv*`` computes it (the same calls, so a copy of a conv's weights gives its output bit for bit)."""
        conv = _CONV[self.dims]
        if self.pads_first:
            mode = "constant" if self.padding_mode == "zeros" else self.padding_mode
            zeros = (0,) * self.dims
            return conv(F.pad(x, self.pads, mode=mode), weight, bias, self.stride, zeros, self.dilation, self.groups)
        return conv(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)

    def output_size(self, spatial) -> tuple[int, ...]:
        """The output's spatial sizes for an input of spatial sizes ``spatial``."""
        return tuple((size + sum(self.sides(d)) - self.dilation[d] * (self.kernel_size[d] - 1) - 1) // self.stride[d]
                     + 1 for d, size in enumerate(spatial))

    def cost(self, input_shape, out_channels: int, bias: bool, itemsize: int) -> Cost:
        """FLOPs and saved bytes of :meth:`conv` on an input ``(N, C_in, *spatial)`` that requires grad, with a
        trainable weight (``params`` is left 0: the caller owns the parameters). As the report counts them:

        * the convolution: 2 per kernel tap of the weight ``(C_out, C_in/groups, *kernel)`` at every output position
          (padding included), forward; the input and the weight gradients each as many backward; the bias, 1 per
          output element forward and its gradient, a sum over batch and positions, ``N·C_out·P − C_out`` backward;
        * ``F.pad``: a copy (0), whose backward for reflection and replication padding adds the border gradients
          back (padded − input elements), and for circular padding adds a whole padded gradient per padded side;
        * saved: the convolution's input (the padded copy when there is one: ``F.pad``'s, or the one ``F.conv*``
          makes for an uneven ``padding="same"``, padded by the excess of one side's padding over the other's), and
          for reflection and replication padding ``F.pad``'s input.
        """
        n, channels, *spatial = input_shape
        positions = math.prod(self.output_size(spatial))
        taps = channels // self.groups * math.prod(self.kernel_size)
        multiply_adds = 2 * n * positions * out_channels * taps
        outputs = n * out_channels * positions
        forward = multiply_adds + (outputs if bias else 0)
        backward = 2 * multiply_adds + (outputs - out_channels if bias else 0)
        elements = n * channels * math.prod(spatial)
        padded = n * channels * math.prod(size + sum(self.sides(d)) for d, size in enumerate(spatial))
        if self.pads_first:
            saved = padded
        else:  # an uneven "same": F.conv* pads a copy by the excess of each side over the other, then convolves
            excess = [self.sides(d)[1] - self.sides(d)[0] for d in range(self.dims)]
            saved = n * channels * math.prod(size + e for size, e in zip(spatial, excess))
        if self.pads_first and self.padding_mode in ("reflect", "replicate"):
            backward += padded - elements
            saved += elements
        elif self.pads_first and self.padding_mode == "circular":
            backward += sum(1 for p in self.pads if p) * padded
        return Cost(0, forward, backward, saved * itemsize)
