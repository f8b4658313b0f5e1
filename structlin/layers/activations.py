"""Activations that may sit between the blocks of a cascade, by name or as modules."""

from __future__ import annotations

import math
from typing import Union

from torch import nn

from ..registry import Registry

__all__ = [
    "ACTIVATIONS", "resolve_activation", "is_elementwise", "is_plain_relu", "has_hooks", "observer", "activation_gain",
]

_OBSERVER = "__structlin_observer__"

ACTIVATIONS: Registry[type] = Registry("activation")
for _name, _cls in {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "silu": nn.SiLU, "sigmoid": nn.Sigmoid}.items():
    ACTIVATIONS.register(_name)(_cls)

# exact types: a subclass may override ``forward`` with anything
_ELEMENTWISE = frozenset(
    {nn.ReLU, nn.LeakyReLU, nn.GELU, nn.Tanh, nn.SiLU, nn.Sigmoid, nn.ELU, nn.Softplus, nn.Identity}
)
_GAINS = {nn.ReLU: math.sqrt(2.0), nn.Tanh: 5.0 / 3.0}


def resolve_activation(activation: Union[None, str, nn.Module]) -> nn.Module | None:
    """``None``, a registered name (``"relu"``, ``"gelu"``, …) or an ``nn.Module`` → a module or ``None``."""
    if activation is None or isinstance(activation, nn.Module):
        return activation
    if isinstance(activation, str):
        return ACTIVATIONS.get(activation)()
    raise ValueError(f"activation must be None, a name in {ACTIVATIONS.names()} or an nn.Module; got {activation!r}")


def has_hooks(module: nn.Module) -> bool:
    """Whether a caller of ``module`` owes it a real call: it has forward, forward-pre or backward hooks of its own.

    Global hooks (``register_module_forward_hook``…) do not count: they are how tools that observe every module
    work (``torch.utils.flop_counter.FlopCounterMode``, profilers), and a fused computation must not change
    under observation. Nor do hooks marked with :func:`observer` (those :func:`structlin.report` registers), for
    the same reason.
    """
    hooks = (module._forward_hooks, module._forward_pre_hooks, module._backward_hooks, module._backward_pre_hooks)
    return any(not _observes(hook) for registered in hooks for hook in registered.values())


def observer(hook):
    """Mark ``hook`` as one that only observes a module (it needs nothing to run in the module's own forward), so
    that :func:`has_hooks` does not count it; returns ``hook``."""
    setattr(hook, _OBSERVER, True)
    return hook


def _observes(hook) -> bool:
    return getattr(hook, _OBSERVER, False)


def is_elementwise(module: nn.Module | None) -> bool:
    """Whether ``module`` acts on each element alone, so it commutes with permutations of the features: exactly
    one of torch's elementwise activation types (a subclass may compute anything) and no hooks (a hook may read
    the feature order)."""
    return type(module) in _ELEMENTWISE and not has_hooks(module)


def is_plain_relu(module: nn.Module | None) -> bool:
    """Whether ``module`` is exactly an ``nn.ReLU`` with no hooks, which a fused kernel may compute in its place."""
    return type(module) is nn.ReLU and not has_hooks(module)


def activation_gain(module: nn.Module | None) -> float:
    """The gain ``torch.nn.init.calculate_gain`` gives the activation (1 when unknown or none)."""
    if type(module) is nn.LeakyReLU:
        return nn.init.calculate_gain("leaky_relu", module.negative_slope)
    return _GAINS.get(type(module), 1.0)
