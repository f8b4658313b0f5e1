"""The contract every structured layer keeps, and the registry of layer kinds."""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from ..costs import Cost
from ..registry import Registry

__all__ = ["StructuredLayer", "register_layer", "unregister_layer", "layer_class", "available_layers"]

_LAYERS: Registry[type] = Registry("layer kind")


def register_layer(name: str, *, overwrite: bool = False):
    """Class decorator: make a :class:`StructuredLayer` subclass buildable as ``StructuredLayer.create(name, …)``."""
    add = _LAYERS.register(name, overwrite=overwrite)

    def decorator(cls: type) -> type:
        if not (isinstance(cls, type) and issubclass(cls, StructuredLayer)):
            raise TypeError(f"register_layer expects a StructuredLayer subclass, got {cls!r}")
        cls.kind = name
        return add(cls)

    return decorator


def unregister_layer(name: str) -> type:
    """Remove a registered layer kind (e.g. one a test registered) and return its class."""
    return _LAYERS.unregister(name)


def _after_load_state_dict(module: "StructuredLayer", incompatible_keys) -> None:
    module._rebuild_derived_buffers()  # a module-level function, so that layers pickle


def layer_class(kind: str) -> type:
    """The class registered as ``kind`` (``ValueError`` listing the valid kinds if there is none)."""
    return _LAYERS.get(kind)


def available_layers() -> list[str]:
    """The registered layer kinds, sorted."""
    return _LAYERS.names()


class StructuredLayer(nn.Module):
    """Base class of structlin's layers: an ``nn.Module`` mapping ``(..., in_features) → (..., out_features)``.

    Subclasses implement ``forward``, ``reset_parameters``, ``cost`` and (for linear maps) ``to_dense``.
    """

    kind: str = ""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        for name, value in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.in_features = in_features
        self.out_features = out_features
        self.register_load_state_dict_post_hook(_after_load_state_dict)

    def _rebuild_derived_buffers(self) -> None:
        """Recompute non-persistent buffers derived from the state (index tables, constants) after a load."""

    @classmethod
    def create(cls, kind: str, in_features: int, out_features: int, **options) -> "StructuredLayer":
        """Build a registered layer kind by name, e.g. ``StructuredLayer.create("acdc", 512, 512, depth=4)``."""
        return _LAYERS.get(kind)(in_features, out_features, **options)

    #: True when :meth:`from_linear` reproduces any ``nn.Linear`` exactly (the swapped model keeps its function).
    exact_from_linear: bool = False

    @classmethod
    def from_linear(cls, linear: nn.Linear, **options) -> "StructuredLayer":
        """A layer of this kind built from ``linear``'s weight and bias (exactly when ``exact_from_linear``)."""
        raise TypeError(f"{cls.__name__} cannot be built from an nn.Linear's weights")

    def reset_parameters(self) -> None:
        """Draw the parameters again with the layer's init strategy (permutations and other buffers stay)."""
        raise NotImplementedError

    def cost(self, batch_shape: Sequence[int] | int = ()) -> Cost:
        """Analytic :class:`~structlin.Cost` of one forward (and backward) pass on inputs ``(*batch_shape, in)``."""
        raise NotImplementedError

    def to_dense(self) -> torch.Tensor:
        """The ``(out_features, in_features)`` weight ``W`` with ``forward(x) == x @ W.T + bias``."""
        raise TypeError(f"{type(self).__name__} is not a linear map, so it has no dense weight")

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"

    def _check_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{type(self).__name__} expects a torch.Tensor, got {type(x).__name__}")
        if x.dim() == 0 or x.shape[-1] != self.in_features:
            raise ValueError(
                f"{type(self).__name__} expects inputs of shape (..., {self.in_features}), got {tuple(x.shape)}"
            )
        if not x.is_floating_point():
            raise TypeError(f"{type(self).__name__} expects a floating-point input, got {x.dtype}")

    @staticmethod
    def _rows(batch_shape: Sequence[int] | int) -> int:
        return batch_shape if isinstance(batch_shape, int) else math.prod(batch_shape)
