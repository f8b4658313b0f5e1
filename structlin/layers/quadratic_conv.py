r"""Quadratic convolutions: the factorized quadratic neurons of :class:`~structlin.Quadratic` with every linear part a
convolution (Xu et al.'s "second-order CNNs"; QuadraNet V2's low-rank and atrous quadratic term).

The forms are :class:`~structlin.Quadratic`'s (:mod:`structlin.layers.quadratic_forms`, one registry): on
``(N, C, *spatial)`` tensors, with ``⋆`` a convolution,

* ``"xu"``: ``y = (W_a ⋆ x + b_a) ⊙ (W_b ⋆ x + b_b) + W_c ⋆ x + b_c``;
* ``"fan"``: ``y = (W_r ⋆ x + b_r) ⊙ (W_g ⋆ x + b_g) + W_b ⋆ (x ⊙ x) + c``;
* ``"lowrank"``: ``y = W ⋆ x + b + P((U ⋆ x) ⊙ (V ⋆ x))``, ``U, V`` convolutions to ``rank`` channels, ``P`` a
  1×1 convolution back to ``out_channels``.

The parts that read the same input with the same geometry are one :class:`ConvBranch`: one convolution over their
concatenated weights.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from ..costs import Cost
from ..strategies.quadratic_init import QuadraticInit, resolve_quadratic_init
from ._checks import check_compute_dtype, check_layer_dtype, check_rank
from .branches import Branch, DenseBranch, Part
from .conv_geometry import CONV_CLASSES, ConvGeometry
from .conv_layers import register_conv_layer
from .quadratic_forms import PartSpec, QuadraticForm, resolve_form
from .quadratic_parts import QuadraticParts

__all__ = ["ConvBranch", "QuadraticConvNd", "QuadraticConv1d", "QuadraticConv2d", "QuadraticConv3d"]


class ConvBranch(DenseBranch):
    """Convolutional parts sharing one input and one :class:`ConvGeometry`, computed as one convolution.

    Parameters ``weight_<name>`` ``(size, in_channels/groups, *kernel)`` and ``bias_<name>`` ``(size,)``, as an
    ``nn.Conv*`` holds them. The forward convolves with ``cat(W_1, …, W_k)`` and ``cat(b_1, …, b_k)`` (zeros for
    the parts without a bias) and splits the output channels; with ``groups > 1`` the concatenation goes group by
    group (output channel block ``j`` of every part must read input block ``j``), so the parts' channels come out
    interleaved and are gathered back. The part-level operations are :class:`DenseBranch`'s.
    """

    kind = "conv"

    def __init__(self, in_channels: int, parts: Sequence[Part], geometry: ConvGeometry, *, device=None, dtype=None):
        Branch.__init__(self, in_channels, parts)  # not DenseBranch's: its weights are (size, in) matrices
        self.geometry = geometry
        factory = {"device": device, "dtype": dtype}
        for p in parts:
            if p.size % geometry.groups:
                raise ValueError(f"part {p.name!r} has {p.size} output channels, not a multiple of groups="
                                 f"{geometry.groups}")
            weight = torch.empty(p.size, in_channels // geometry.groups, *geometry.kernel_size, **factory)
            self.register_parameter(f"weight_{p.name}", nn.Parameter(weight))
            self.register_parameter(f"bias_{p.name}", nn.Parameter(torch.empty(p.size, **factory)) if p.bias else None)

    @property
    def fan_in(self) -> int:
        """Inputs of one output: ``in_channels/groups · kernel taps``."""
        return self.in_features // self.geometry.groups * math.prod(self.geometry.kernel_size)

    def reset_part(self, name):
        """``nn.Conv*``'s default init: weight and bias ``U(±1/√fan_in)``."""
        bound = 1.0 / math.sqrt(self.fan_in)
        with torch.no_grad():
            self._weight(name).uniform_(-bound, bound)
            if self._bias(name) is not None:
                self._bias(name).uniform_(-bound, bound)

    def load_linear(self, name, weight, bias):
        raise TypeError("a convolutional part holds a convolution's weight; use load_conv")

    def load_conv(self, name: str, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        """Make part ``name`` a copy of a convolution's ``weight`` and ``bias`` (the weight keeps its memory format,
        so the part computes what the convolution does bit for bit)."""
        own = self._weight(name)
        if tuple(weight.shape) != tuple(own.shape):
            raise ValueError(f"part {name!r} holds a weight of shape {tuple(own.shape)}, got {tuple(weight.shape)}")
        if (bias is None) != (self._bias(name) is None):
            raise ValueError(f"part {name!r} {'has' if bias is None else 'has no'} bias, unlike the given convolution")
        with torch.no_grad():
            own.data = weight.detach().to(own.dtype).clone()
            if bias is not None:
                self._bias(name).copy_(bias)

    def _concatenated(self, tensors: list[torch.Tensor]) -> torch.Tensor:
        """The parts' tensors along the output channels, group by group."""
        if len(tensors) == 1:
            return tensors[0]
        groups = self.geometry.groups
        if groups == 1:
            return torch.cat(tensors)
        return torch.cat([t.unflatten(0, (groups, -1)) for t in tensors], dim=1).flatten(0, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        names = list(self.parts)
        weight = self._concatenated([self._weight(n) for n in names])
        bias = None
        if any(self.parts[n].bias for n in names):
            bias = self._concatenated([self._bias(n) if self.parts[n].bias else weight.new_zeros(self.parts[n].size)
                                       for n in names])
        y = self.geometry.conv(x, weight, bias)
        if len(names) == 1:
            return {names[0]: y}
        groups = self.geometry.groups
        if groups == 1:
            return dict(zip(names, y.split([self.parts[n].size for n in names], dim=1)))
        pieces = y.unflatten(1, (groups, -1)).split([self.parts[n].size // groups for n in names], dim=2)
        if y.dim() > 3 and y.stride(1) == 1 and y.shape[1] > 1:  # channels innermost (channels_last): keep it so
            return {n: piece.movedim((1, 2), (-2, -1)).flatten(-2).movedim(-1, 1) for n, piece in zip(names, pieces)}
        return {n: piece.flatten(1, 2) for n, piece in zip(names, pieces)}

    def cost(self, input_shape) -> Cost:
        """Parameters, and one convolution of all the parts' output channels on an input ``(N, C, *spatial)``
        (:meth:`ConvGeometry.cost`); the gather of interleaved channels (``groups > 1``) moves data only."""
        total = sum(p.size for p in self.parts.values())
        biased = sum(p.size for p in self.parts.values() if p.bias)
        itemsize = next(iter(self.parameters())).element_size()
        params = total * self.fan_in + biased
        return Cost(params=params) + self.geometry.cost(input_shape, total, biased > 0, itemsize)

    @property
    def input_uses(self):
        return 1


class QuadraticConvNd(QuadraticParts, nn.Module):
    r"""Base class of :class:`QuadraticConv1d`, :class:`QuadraticConv2d` and :class:`QuadraticConv3d`.

    A layer of factorized quadratic neurons whose linear parts are convolutions; forms as for
    :class:`~structlin.Quadratic` (``⋆`` a convolution with the layer's geometry):

    * ``"xu"``: ``y = (W_a ⋆ x + b_a) ⊙ (W_b ⋆ x + b_b) + W_c ⋆ x + b_c``;
    * ``"fan"`` (default): ``y = (W_r ⋆ x + b_r) ⊙ (W_g ⋆ x + b_g) + W_b ⋆ (x ⊙ x) + c``;
    * ``"lowrank"`` (QuadraNet V2): ``y = W ⋆ x + b + P((U ⋆ x) ⊙ (V ⋆ x))``, ``U, V`` ``(rank, in, *kernel)``
      and ``P`` a 1×1 convolution ``(out, rank, 1, …)``;
    * any form registered in :data:`~structlin.layers.quadratic_forms.QUADRATIC_FORMS`.

    Geometry of each part:

    * the first-order part (``a``, ``r``, ``W``) is the convolution the arguments describe, exactly as
      ``nn.Conv*`` computes it;
    * the other parts that read the input (or ``x ⊙ x``) use ``quadratic_dilation`` (default: ``dilation``): a
      larger one is the *atrous* design, a wider receptive field at the same cost, padded so that the output grid
      is the first-order part's (:meth:`ConvGeometry.atrous`);
    * parts of ``rank`` channels (``U``, ``V``) read every input channel (``groups = 1``, so any rank works with
      any ``groups``); the other input parts keep ``groups``;
    * parts reading what the form computes from the parts' outputs (``P`` on ``(U ⋆ x) ⊙ (V ⋆ x)``) are 1×1
      convolutions of the output grid.

    The parts that read one input with one geometry run as one convolution (:class:`ConvBranch`): a fresh xu
    layer is a single convolution to ``3·out`` channels, fan two, lowrank two (``[W; U; V]``, then ``P``), or
    three with an atrous quadratic term (``W`` apart from ``[U; V]``).

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, padding_mode: as for
            ``nn.Conv*`` (checked by it). ``bias=False`` drops every bias the form can do without, as for
            :class:`~structlin.Quadratic` (the product's second factor keeps its bias: it starts at 1).
        form: ``"xu"``, ``"fan"``, ``"lowrank"``, a registered form name or a :class:`QuadraticForm`.
        rank: channels of the lowrank form's ``U ⋆ x`` and ``V ⋆ x`` (required for it).
        quadratic_dilation: dilation of the parts other than the first-order one (int or one per dimension).
        init: ``"linear-start"`` (default: exactly the first-order convolution at start, every parameter
            trainable), ``"random"``, or a :class:`~structlin.strategies.quadratic_init.QuadraticInit`.
        separate_first_order: compute the first-order part in a convolution of its own (group
            ``x_first_order``) even when other parts share its input and geometry. :meth:`from_conv` sets it: a
            convolution of more output channels may sum in another order, and the conversion must be exact.
        device, dtype: of every part; dtype float16, bfloat16, float32 or float64.

    Shape:
        input ``(N, in_channels, *spatial)`` or ``(in_channels, *spatial)`` → output ``(N, out_channels,
        *spatial_out)`` or ``(out_channels, *spatial_out)``, ``spatial_out`` as for ``nn.Conv*``.

    Parameters live in ``branches[<group>]`` (``x``, ``x_x`` for ``x ⊙ x``, ``u_v``, with ``_first_order``,
    ``_atrous`` or ``_ungrouped`` when those parts run apart): e.g. ``branches.x.weight_a``.
    """

    dims: int = 0
    #: :meth:`from_conv` reproduces any ``nn.Conv*`` of its dimension exactly
    exact_from_conv = True

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        *,
        form: str | QuadraticForm = "fan",
        rank: int | None = None,
        quadratic_dilation=None,
        init: str | QuadraticInit = "linear-start",
        separate_first_order: bool = False,
        device=None,
        dtype=None,
    ):
        super().__init__()
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        check_layer_dtype(type(self).__name__, dtype)
        self.geometry = ConvGeometry.build(self.dims, in_channels, out_channels, kernel_size, stride, padding,
                                           dilation, groups, padding_mode)
        self.quadratic_geometry = self.geometry.atrous(
            self.geometry.dilation if quadratic_dilation is None else quadratic_dilation)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.form = resolve_form(form)
        self.init = resolve_quadratic_init(init)
        if self.form.needs_rank and rank is None:
            raise ValueError(f"rank=<positive int> is required for form={self.form.name!r}")
        self.rank = None if rank is None else check_rank(rank)
        self.separate_first_order = bool(separate_first_order)
        self._sizes = {"in": in_channels, "out": out_channels, "rank": self.rank}
        groups: dict[str, tuple[ConvGeometry, list[Part]]] = {}
        self._group_of: dict[str, str] = {}
        self._group_input: dict[str, str] = {}
        for spec in self.form.parts:
            key, geometry = self._placement(spec)
            has_bias = spec.bias and (bias or spec.needs_bias)
            groups.setdefault(key, (geometry, []))[1].append(Part(spec.name, self._sizes[spec.size], has_bias))
            self._group_of[spec.name] = key
            self._group_input[key] = spec.input
        self.branches = nn.ModuleDict()
        for key, (geometry, parts) in groups.items():
            in_size = self._sizes[self.form.inputs[self._group_input[key]]]
            self.branches[key] = ConvBranch(in_size, parts, geometry, device=device, dtype=dtype)
        self.reset_parameters()

    def _placement(self, spec: PartSpec) -> tuple[str, ConvGeometry]:
        """The branch key and geometry of a part (see the class docstring)."""
        key = spec.input.replace("*", "_")
        if not self.form.on_input_grid(spec.input):
            return key, self.geometry.pointwise()
        if spec.first_order:
            geometry = self.geometry
            key += "_first_order" if self.separate_first_order else ""
        else:
            geometry = self.quadratic_geometry
            key += "_atrous" if geometry.dilation != self.geometry.dilation else ""
        if spec.size != "out" and geometry.groups > 1:
            geometry = geometry.ungrouped()
            key += "_ungrouped"
        return key, geometry

    # ------------------------------------------------------------------------------------------ nn.Conv's names
    kernel_size = property(lambda self: self.geometry.kernel_size)
    stride = property(lambda self: self.geometry.stride)
    padding = property(lambda self: self.geometry.padding)
    dilation = property(lambda self: self.geometry.dilation)
    groups = property(lambda self: self.geometry.groups)
    padding_mode = property(lambda self: self.geometry.padding_mode)
    quadratic_dilation = property(lambda self: self.quadratic_geometry.dilation)

    @property
    def _dtype_source(self) -> torch.Tensor:
        return next(self.parameters())

    def reset_parameters(self) -> None:
        """Set every part with the init strategy (its random parts drawn as ``nn.Conv*`` draws its weights)."""
        self.init.init_(self)

    # ------------------------------------------------------------------------------------------ compute
    def _check_input(self, x: torch.Tensor) -> None:
        name = type(self).__name__
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} expects a torch.Tensor, got {type(x).__name__}")
        spatial = ", ".join(self._spatial_names())
        if x.dim() not in (self.dims + 1, self.dims + 2) or x.shape[-self.dims - 1] != self.in_channels:
            raise ValueError(f"{name} expects inputs of shape (N, {self.in_channels}, {spatial}) or "
                             f"({self.in_channels}, {spatial}), got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise TypeError(f"{name} expects a floating-point input, got {x.dtype}")

    def _spatial_names(self) -> tuple[str, ...]:
        return {1: ("L",), 2: ("H", "W"), 3: ("D", "H", "W")}[self.dims]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, in_channels, *spatial)`` (or without ``N``) → ``(N, out_channels, *spatial_out)``."""
        self._check_input(x)
        compute = self._dtype_source.dtype
        check_compute_dtype(self, x, compute, self._dtype_source.device)
        batched = x.dim() == self.dims + 2
        y = self.form.combine(self._run, (x if batched else x.unsqueeze(0)).to(compute))
        return (y if batched else y.squeeze(0)).to(x.dtype)

    def output_shape(self, input_shape) -> tuple[int, ...]:
        """The output's shape for an input of shape ``input_shape`` (with or without the batch dimension)."""
        lead = tuple(input_shape[: -self.dims - 1])
        return (*lead, self.out_channels, *self.geometry.output_size(tuple(input_shape[-self.dims:])))

    def cost(self, input_shape) -> Cost:
        """Analytic cost of one forward and backward on an input of shape ``(N, in_channels, *spatial)`` (or
        without ``N``): every branch's convolution (:meth:`ConvBranch.cost`), the form's elementwise ops
        (:meth:`QuadraticForm.elementwise_cost` on the element counts of whole tensors) and the sums autograd does
        of the gradients of an input read by ``k > 1`` autograd nodes. Conventions: docs/flops.md."""
        shape = tuple(input_shape)
        if len(shape) == self.dims + 1:
            shape = (1, *shape)
        if len(shape) != self.dims + 2 or shape[1] != self.in_channels:
            raise ValueError(f"{type(self).__name__}.cost expects an input shape (N, {self.in_channels}, "
                             f"{', '.join(self._spatial_names())}), got {tuple(input_shape)}")
        n, _, *spatial = shape
        out_spatial = self.geometry.output_size(spatial)
        positions = {True: math.prod(spatial), False: math.prod(out_spatial)}
        grid = {True: tuple(spatial), False: out_spatial}
        elements = {s: n * self._sizes[size] * positions[self.form.on_input_grid(s)]
                    for s, size in self.form.inputs.items()}
        counts = {"in": n * self.in_channels * positions[True], "out": n * self.out_channels * positions[False],
                  "rank": None if self.rank is None else n * self.rank * positions[False]}
        itemsize = self._dtype_source.element_size()
        total = self.form.elementwise_cost(1, counts["in"], counts["out"], counts["rank"], itemsize)
        for key, branch in self.branches.items():
            source = self._group_input[key]
            channels = self._sizes[self.form.inputs[source]]
            total = total + branch.cost((n, channels, *grid[self.form.on_input_grid(source)]))
        return total + self._gradient_sums(elements)

    # ------------------------------------------------------------------------------------------ conversion
    @classmethod
    def from_conv(cls, conv: nn.Module, *, form: str | QuadraticForm = "fan", rank: int | None = None,
                  **options) -> "QuadraticConvNd":
        """A quadratic convolution computing exactly ``conv`` (same device and dtype; bit for bit in float32, for
        every geometry and padding mode) that trains as ``linear-start``.

        The first-order part is a copy of ``conv``'s weight and bias in a convolution of its own, computed as
        ``conv`` computes it; the other parts take their ``linear-start`` values, so the quadratic contribution is
        exactly zero. The layer has ``bias=`` whether ``conv`` has a bias. ``options``: ``quadratic_dilation``.
        """
        expected = CONV_CLASSES[cls.dims]
        if not isinstance(conv, expected):
            raise TypeError(f"{cls.__name__}.from_conv expects an nn.{expected.__name__}, got {type(conv).__name__}")
        if "init" in options or "separate_first_order" in options:
            raise TypeError(f"{cls.__name__}.from_conv sets init='linear-start' and separate_first_order=True itself")
        has_bias = conv.bias is not None
        if options.pop("bias", has_bias) != has_bias:
            raise ValueError(f"{cls.__name__}.from_conv takes bias from the convolution, which has "
                             f"{'a' if has_bias else 'no'} bias; leave bias out")
        weight = conv.weight.detach()
        layer = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                    conv.groups, has_bias, conv.padding_mode, form=form, rank=rank, init="linear-start",
                    separate_first_order=True, device=weight.device, dtype=weight.dtype, **options)
        (first,) = [spec.name for spec in layer.form.parts if spec.first_order]
        layer._branch(first).load_conv(first, weight, conv.bias.detach() if has_bias else None)
        return layer

    def extra_repr(self) -> str:
        g = self.geometry
        text = f"{self.in_channels}, {self.out_channels}, kernel_size={g.kernel_size}, stride={g.stride}"
        if g.padding != (0,) * self.dims:
            text += f", padding={g.padding if g.padding is not None else g.pads}"
        if g.dilation != (1,) * self.dims:
            text += f", dilation={g.dilation}"
        if g.groups != 1:
            text += f", groups={g.groups}"
        if g.padding_mode != "zeros":
            text += f", padding_mode={g.padding_mode!r}"
        text += f", form={self.form.name!r}"
        if self.rank is not None:
            text += f", rank={self.rank}"
        if self.quadratic_dilation != g.dilation:
            text += f", quadratic_dilation={self.quadratic_dilation}"
        return text + f", init={self.init!r}"


@register_conv_layer("quadratic", 1)
class QuadraticConv1d(QuadraticConvNd):
    """Quadratic ``nn.Conv1d``: input ``(N, C_in, L)`` or ``(C_in, L)`` (see :class:`QuadraticConvNd`)."""

    dims = 1


@register_conv_layer("quadratic", 2)
class QuadraticConv2d(QuadraticConvNd):
    """Quadratic ``nn.Conv2d``: input ``(N, C_in, H, W)`` or ``(C_in, H, W)`` (see :class:`QuadraticConvNd`)."""

    dims = 2


@register_conv_layer("quadratic", 3)
class QuadraticConv3d(QuadraticConvNd):
    """Quadratic ``nn.Conv3d``: input ``(N, C_in, D, H, W)`` or ``(C_in, D, H, W)`` (see
    :class:`QuadraticConvNd`)."""

    dims = 3
