"""One op call as a FLOP formula sees it: :class:`Call`, and the tensor helpers the formulas share."""

from __future__ import annotations

import torch
from torch.utils._pytree import tree_leaves

__all__ = ["Call", "tensors", "numel"]


def tensors(tree) -> list[torch.Tensor]:
    """The tensors among the leaves of ``tree`` (a nest of tuples, lists and dicts)."""
    return [t for t in tree_leaves(tree) if isinstance(t, torch.Tensor)]


def numel(t) -> int:
    """Elements of a tensor; 1 for a scalar argument."""
    return t.numel() if isinstance(t, torch.Tensor) else 1


class Call:
    """The arguments and result of one call of an ``aten`` op.

    ``call.args``, ``call.kwargs`` and ``call.out`` are as the op received and returned them; ``call["name"]``
    is the argument of that name in the op's schema (its default when the call left it out), so a formula reads
    ``call["reduction"]`` wherever the caller put it.
    """

    __slots__ = ("func", "args", "kwargs", "out", "_bound")

    def __init__(self, func, args: tuple, kwargs: dict, out):
        self.func, self.args, self.kwargs, self.out = func, args, kwargs, out
        self._bound: dict | None = None

    def __getitem__(self, name: str):
        if self._bound is None:
            schema = self.func._schema.arguments
            bound = {a.name: a.default_value if a.has_default_value() else None for a in schema}
            bound.update(zip((a.name for a in schema), self.args))
            bound.update(self.kwargs)
            self._bound = bound
        return self._bound[name]

    @property
    def outputs(self) -> list[torch.Tensor]:
        """The output tensors, in order."""
        return tensors(self.out)

    @property
    def out_numel(self) -> int:
        """Elements of all output tensors together."""
        return sum(t.numel() for t in self.outputs)
