"""Activations that may sit between the blocks of a cascade, by name or as modules."""

from __future__ import annotations

import math
from typing import Union

from torch import nn

from ..registry import Registry

__all__ = ["ACTIVATIONS", "resolve_activation", "is_elementwise", "activation_gain"]

ACTIVATIONS: Registry[type] = Registry("activation")
for _name, _cls in {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "silu": nn.SiLU, "sigmoid": nn.Sigmoid}.items():
    ACTIVATIONS.register(_name)(_cls)

_ELEMENTWISE = (nn.ReLU, nn.LeakyReLU, nn.GELU, nn.Tanh, nn.SiLU, nn.Sigmoid, nn.ELU, nn.Softplus, nn.Identity)
_GAINS = {nn.ReLU: math.sqrt(2.0), nn.Tanh: 5.0 / 3.0}


def resolve_activation(activation: Union[None, str, nn.Module]) -> nn.Module | None:
    """``None``, a registered name (``"relu"``, ``"gelu"``, …) or an ``nn.Module`` → a module or ``None``."""
    if activation is None or isinstance(activation, nn.Module):
        return activation
    if isinstance(activation, str):
        return ACTIVATIONS.get(activation)()
    raise ValueError(f"activation must be None, a name in {ACTIVATIONS.names()} or an nn.Module; got {activation!r}")


def is_elementwise(module: nn.Module) -> bool:
    """Whether ``module`` acts on each element alone (so it commutes with permutations of the features)."""
    return isinstance(module, _ELEMENTWISE)


def activation_gain(module: nn.Module | None) -> float:
    """The gain ``torch.nn.init.calculate_gain`` gives the activation (1 when unknown or none)."""
    if isinstance(module, nn.LeakyReLU):
        return nn.init.calculate_gain("leaky_relu", module.negative_slope)
    return _GAINS.get(type(module), 1.0)
