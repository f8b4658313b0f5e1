"""Convolutions in a swap: which kinds convert ``nn.Conv1d``/``nn.Conv2d``/``nn.Conv3d``, how a replacement starts and
is built, and the error it is measured with.

A kind converts convolutions of the dimensions it registered a class for
(:func:`structlin.layers.register_conv_layer`: ``"quadratic"`` has ``QuadraticConv1d/2d/3d``). Such a class has an
exact ``from_conv`` (``exact_from_conv = True``), so every ``preserve`` mode but ``"none"`` starts exactly; there
is no least-squares fit of a convolution.
"""

from __future__ import annotations

import torch
from torch import nn

from ..layers.conv_geometry import ConvGeometry
from ..layers.conv_layers import conv_layer_class
from ._starts import STARTS, Start

__all__ = ["conv_dims", "choose_conv_start", "build_conv_layer", "conv_relative_error", "gather_conv_inputs",
           "CONV_BUILDS"]

#: how a plan says a convolution's replacement was built: by its ``from_conv`` or by its constructor
CONV_BUILDS = {"from_linear": "from_conv", "constructor": "constructor"}


def conv_dims(kind: str) -> tuple[int, ...]:
    """The spatial dimensions of the ``nn.Conv*`` layers that ``kind`` converts (empty for most kinds)."""
    return tuple(d for d in (1, 2, 3) if conv_layer_class(kind, d) is not None)


def choose_conv_start(cls: type, preserve: str) -> Start:
    """``"exact"`` (by ``from_conv``) unless ``preserve="none"`` or the class has no exact ``from_conv``
    (``"init"``); ``preserve="fit"`` on such a class is a ``ValueError``: convolutions are not fitted."""
    if preserve == "none":
        return STARTS["init"]
    if getattr(cls, "exact_from_conv", False):
        return STARTS["exact"]
    if preserve == "fit":
        raise ValueError(f"{cls.__name__} has no exact from_conv and swap does not fit convolutions; use "
                         "preserve='auto' or 'none'")
    return STARTS["init"]


def _arguments(conv: nn.Module) -> dict:
    return dict(in_channels=conv.in_channels, out_channels=conv.out_channels, kernel_size=conv.kernel_size,
                stride=conv.stride, padding=conv.padding, dilation=conv.dilation, groups=conv.groups,
                padding_mode=conv.padding_mode)


def build_conv_layer(cls: type, kind: str, build: str, conv: nn.Module, options: dict, name: str
                     ) -> tuple[nn.Module, dict]:
    """The replacement of ``conv``, built by ``build`` (``"from_conv"`` or ``"constructor"``: ``conv``'s arguments
    and, by default, its bias) on its device and dtype, and the options it was built with; errors name the
    layer, its shape and the options."""
    from_conv = build == "from_conv"
    used = dict(options) if from_conv else {"bias": conv.bias is not None, **options}
    weight = conv.weight
    try:
        if from_conv:
            layer = cls.from_conv(conv, **used)
        else:
            layer = cls(**_arguments(conv), **used, device=weight.device, dtype=weight.dtype)
    except (TypeError, ValueError) as error:
        raise type(error)(
            f"could not build a {kind!r} convolution for {name!r} ({conv.in_channels}→{conv.out_channels}, "
            f"kernel {tuple(conv.kernel_size)}) with options {used}: {error} (swap's conv_options go to "
            "convolutions only; exclude=... leaves convolutions alone)"
        ) from error
    return layer, used


def _random_inputs(conv: nn.Module, geometry: ConvGeometry) -> torch.Tensor:
    """Two standard normal inputs from a fixed seed, large enough for the kernel, the stride and the padding."""
    spatial = [max(geometry.dilation[d] * (geometry.kernel_size[d] - 1) + 1, 2 * max(geometry.sides(d)) + 1)
               + geometry.stride[d] + 2 for d in range(geometry.dims)]
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, conv.in_channels, *spatial, generator=generator, dtype=torch.float64)
    return x.to(device=conv.weight.device, dtype=conv.weight.dtype)


def conv_relative_error(layer: nn.Module, conv: nn.Module, inputs: torch.Tensor | None = None) -> float:
    """``‖layer(X) − conv(X)‖_F / ‖conv(X)‖_F`` on ``inputs`` (the conv's calibration inputs) or on standard
    normal inputs; ``layer`` runs in eval mode, the reference is the conv's computation without its hooks."""
    geometry = ConvGeometry.of(conv)
    x = _random_inputs(conv, geometry) if inputs is None else inputs.to(conv.weight.device, conv.weight.dtype)
    mode = layer.training
    layer.eval()
    try:
        with torch.no_grad():
            reference = geometry.conv(x, conv.weight, conv.bias).double()
            error = (layer(x).double() - reference).norm() / reference.norm().clamp_min(torch.finfo(torch.float64).tiny)
    finally:
        layer.train(mode)
    return float(error)


def gather_conv_inputs(chunks: list[torch.Tensor]) -> torch.Tensor:
    """The inputs a convolution saw in the calibration batch: concatenated along the batch when they have one
    shape, else the largest call's."""
    if all(c.shape[1:] == chunks[0].shape[1:] for c in chunks):
        return torch.cat(chunks)
    return max(chunks, key=torch.Tensor.numel)
