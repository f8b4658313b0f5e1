"""Linear-like module types: how to read a module's weight and bias as an ``nn.Linear`` would hold them.

:func:`swap` replaces any module whose type has an adapter here. ``nn.Linear`` has one; so does Hugging Face's
``transformers.pytorch_utils.Conv1D`` (GPT-2's layers: a linear map whose weight is stored transposed,
``(in, out)``), registered by its qualified name so that structlin never imports transformers. A user registers
their own type with :func:`register_linear_adapter`.

Types match exactly (a subclass needs its own adapter): a subclass may be read by its parent in ways a
replacement cannot serve, as ``nn.MultiheadAttention`` reads its ``out_proj``.

Convolutions (``nn.Conv1d``, ``nn.Conv2d``, ``nn.Conv3d``, exactly those types) have a :class:`ConvAdapter`: they
are swapped only to a kind with a convolutional layer of their dimension (:mod:`structlin.swap._convs`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ..registry import Registry

__all__ = ["LinearAdapter", "ConvAdapter", "register_linear_adapter", "unregister_linear_adapter", "linear_adapter",
           "linear_adapters", "conv_adapter", "type_name"]

_ADAPTERS: Registry["LinearAdapter"] = Registry("linear adapter")


def type_name(cls: type) -> str:
    """``"module.QualifiedName"`` of a class: the key adapters are registered under."""
    return f"{cls.__module__}.{cls.__qualname__}"


@dataclass(frozen=True)
class LinearAdapter:
    """How to see a module as the affine map ``y = x Wᵀ + b``.

    Attributes:
        weight: ``module → W``, the ``(out_features, in_features)`` weight (a view is fine: it is only read).
        bias: ``module → b`` ``(out_features,)`` or ``None``.
    """

    weight: Callable[[nn.Module], torch.Tensor]
    bias: Callable[[nn.Module], torch.Tensor | None]

    #: what swap builds the replacement from: ``from_linear`` of a registered kind
    family = "linear"

    def features(self, module: nn.Module) -> tuple[int, int]:
        """``(in_features, out_features)`` of the module."""
        out_features, in_features = self.read(module)[0].shape
        return in_features, out_features

    def read(self, module: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The module's ``(W, b)``, checked: ``W`` 2-D floating point, ``b`` ``None`` or ``(out,)``."""
        name = type(module).__name__
        try:
            weight, bias = self.weight(module), self.bias(module)
        except AttributeError as error:
            raise TypeError(f"the linear adapter of {name} could not read the module: {error}") from error
        if not isinstance(weight, torch.Tensor) or weight.dim() != 2 or not weight.is_floating_point():
            got = tuple(weight.shape) if isinstance(weight, torch.Tensor) else type(weight).__name__
            raise TypeError(f"the linear adapter of {name} must give a 2-D floating-point (out, in) weight, got {got}")
        if bias is not None and (not isinstance(bias, torch.Tensor) or tuple(bias.shape) != (weight.shape[0],)):
            got = tuple(bias.shape) if isinstance(bias, torch.Tensor) else type(bias).__name__
            raise TypeError(f"the linear adapter of {name} must give a bias of shape ({weight.shape[0]},) or None, "
                            f"got {got}")
        return weight, bias

    def as_linear(self, module: nn.Module) -> nn.Linear:
        """An ``nn.Linear`` holding the module's weight and bias (the module itself when it is an ``nn.Linear``;
        otherwise a read-only stand-in whose tensors share the module's memory). It is what ``from_linear``,
        the fit and the error measurement read."""
        if type(module) is nn.Linear:
            return module
        weight, bias = self.read(module)
        out_features, in_features = weight.shape
        linear = nn.Linear(in_features, out_features, bias=bias is not None, device="meta")
        linear.weight = nn.Parameter(weight.detach(), requires_grad=False)
        if bias is not None:
            linear.bias = nn.Parameter(bias.detach(), requires_grad=False)
        linear.train(module.training)
        return linear


@dataclass(frozen=True)
class ConvAdapter:
    """How swap sees an ``nn.Conv{dims}d``: by its channels; the kind's convolutional class reads the module itself
    (``from_conv``)."""

    dims: int

    family = "conv"

    def features(self, module: nn.Module) -> tuple[int, int]:
        """``(in_channels, out_channels)`` of the module."""
        return module.in_channels, module.out_channels


_CONV_TYPES = {nn.Conv1d: 1, nn.Conv2d: 2, nn.Conv3d: 3}


def conv_adapter(module: nn.Module) -> ConvAdapter | None:
    """The adapter of an ``nn.Conv1d``/``nn.Conv2d``/``nn.Conv3d`` (exactly these types), else ``None``."""
    dims = _CONV_TYPES.get(type(module))
    return None if dims is None else ConvAdapter(dims)


def register_linear_adapter(
    cls: type | str,
    *,
    weight: Callable[[nn.Module], torch.Tensor],
    bias: Callable[[nn.Module], torch.Tensor | None] = lambda module: module.bias,
    overwrite: bool = False,
) -> LinearAdapter:
    """Let :func:`structlin.swap` replace modules of type ``cls`` (exactly that type).

    Args:
        cls: the module class, or its qualified name ``"package.module.ClassName"`` (so that registering does not
            import the package that defines it).
        weight: ``module → (out_features, in_features)`` weight, e.g. ``lambda m: m.weight.T`` for a module that
            stores it transposed.
        bias: ``module → (out_features,)`` bias or ``None``; by default ``module.bias``.
        overwrite: replace an adapter already registered for ``cls``.

    Example::

        structlin.register_linear_adapter(MyLinear, weight=lambda m: m.kernel.T, bias=lambda m: m.offset)
    """
    key = cls if isinstance(cls, str) else type_name(cls) if isinstance(cls, type) else None
    if key is None:
        raise TypeError(f"register_linear_adapter expects a class or its qualified name, got {cls!r}")
    if not callable(weight) or not callable(bias):
        raise TypeError("weight and bias must be callables taking the module")
    adapter = LinearAdapter(weight, bias)
    return _ADAPTERS.register(key, overwrite=overwrite)(adapter)


def unregister_linear_adapter(cls: type | str) -> LinearAdapter:
    """Remove the adapter of ``cls`` (a class or its qualified name) and return it."""
    return _ADAPTERS.unregister(cls if isinstance(cls, str) else type_name(cls))


def linear_adapter(module: nn.Module) -> LinearAdapter | None:
    """The adapter of ``module``'s exact type, or ``None`` when it is not a linear-like module."""
    key = type_name(type(module))
    return _ADAPTERS.get(key) if key in _ADAPTERS else None


def linear_adapters() -> list[str]:
    """The qualified names of the registered linear-like types."""
    return _ADAPTERS.names()


register_linear_adapter(nn.Linear, weight=lambda module: module.weight)
# Hugging Face's Conv1D (GPT-2, GPT, …): weight (in, out), y = x W + b
register_linear_adapter("transformers.pytorch_utils.Conv1D", weight=lambda module: module.weight.T)
