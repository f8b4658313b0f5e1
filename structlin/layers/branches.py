"""Branch strategies: how a quadratic layer computes the linear parts that share one input.

A branch holds named *parts*, each a linear map ``x ↦ W x (+ b)`` from the shared input ``(..., in_features)`` to
``(..., size)``. ``make_branch(kind, …)`` builds one:

* ``"dense"`` (:class:`DenseBranch`): one weight per part, computed as a single matmul over the concatenated
  weights (``F.linear(x, cat(W_1, …, W_k), cat(b_1, …, b_k))``) and split;
* any other registered layer kind (:class:`StructuredBranch`): one ``StructuredLayer`` of that kind per part,
  built without its own bias, as ``part(x) = scale ⊙ layer(x) + bias`` with a learned per-output ``scale``.
  The scale is what lets a structured part output an exact constant (``scale = 0``, ``bias = c``) while its
  structured weights stay random, so they get a gradient as soon as the scale moves.

Register a branch strategy of your own with ``@BRANCHES.register("name")`` on a class with
:class:`Branch`'s constructor and methods.
"""

from __future__ import annotations

import inspect
import math
from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..costs import Cost
from ..registry import Registry
from .base import StructuredLayer, available_layers, layer_class

__all__ = ["Part", "Branch", "DenseBranch", "StructuredBranch", "BRANCHES", "make_branch", "branch_needs_rank",
           "check_branch"]


class Part(NamedTuple):
    """One linear part of a branch: its name, output size and whether it has a bias."""

    name: str
    size: int
    bias: bool


def _linear_bound(in_features: int) -> float:
    return 1.0 / math.sqrt(in_features)


class Branch(nn.Module):
    """Base class: linear parts sharing the input ``(..., in_features)``; ``forward`` returns
    ``{name: (..., size)}``."""

    kind: str = ""

    def __init__(self, in_features: int, parts: Sequence[Part]):
        super().__init__()
        self.in_features = in_features
        self.parts = {p.name: p for p in parts}

    def reset_part(self, name: str) -> None:
        """Redraw part ``name`` as a fresh linear map of ``nn.Linear``'s scale."""
        raise NotImplementedError

    def set_constant(self, name: str, value: float) -> None:
        """Make part ``name`` output the constant ``value`` (its weight a zero map), keeping it trainable."""
        raise NotImplementedError

    def load_linear(self, name: str, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        """Make part ``name`` compute exactly ``x @ weight.T + bias``."""
        raise TypeError(f"a {self.kind!r} branch cannot hold an arbitrary dense weight; use a 'dense' branch")

    def part_dense(self, name: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(weight (size, in), bias (size,) or None)`` of part ``name``."""
        raise NotImplementedError

    def part_parameters(self, name: str) -> list[nn.Parameter]:
        raise NotImplementedError

    def cost(self, rows: int) -> Cost:
        """Analytic cost of the branch on ``rows`` rows, the gradient of its input included."""
        raise NotImplementedError

    @property
    def input_uses(self) -> int:
        """How many autograd nodes read the branch's input (the engine sums their gradients of it)."""
        raise NotImplementedError

    def _zero_bias_check(self, name: str, value: float) -> None:
        if value != 0 and not self.parts[name].bias:
            raise ValueError(f"part {name!r} has no bias, so it cannot output the constant {value}")


BRANCHES: Registry[type] = Registry("branch strategy")


@BRANCHES.register("dense")
class DenseBranch(Branch):
    """Dense parts: parameters ``weight_<name>`` ``(size, in)`` and ``bias_<name>`` ``(size,)``, one fused matmul."""

    kind = "dense"

    def __init__(self, in_features: int, parts: Sequence[Part], *, device=None, dtype=None, **options):
        super().__init__(in_features, parts)
        if options:
            raise TypeError(f"a 'dense' branch takes no options, got {sorted(options)}")
        factory = {"device": device, "dtype": dtype}
        for p in parts:
            self.register_parameter(f"weight_{p.name}", nn.Parameter(torch.empty(p.size, in_features, **factory)))
            bias = nn.Parameter(torch.empty(p.size, **factory)) if p.bias else None
            self.register_parameter(f"bias_{p.name}", bias)

    def _weight(self, name: str) -> nn.Parameter:
        return getattr(self, f"weight_{name}")

    def _bias(self, name: str) -> nn.Parameter | None:
        return getattr(self, f"bias_{name}")

    def reset_part(self, name):
        bound = _linear_bound(self.in_features)
        with torch.no_grad():
            self._weight(name).uniform_(-bound, bound)
            if self._bias(name) is not None:
                self._bias(name).uniform_(-bound, bound)

    def set_constant(self, name, value):
        self._zero_bias_check(name, value)
        with torch.no_grad():
            self._weight(name).zero_()
            if self._bias(name) is not None:
                self._bias(name).fill_(value)

    def load_linear(self, name, weight, bias):
        if (bias is None) != (self._bias(name) is None):
            raise ValueError(f"part {name!r} {'has' if bias is None else 'has no'} bias, unlike the given linear map")
        with torch.no_grad():
            self._weight(name).copy_(weight)
            if bias is not None:
                self._bias(name).copy_(bias)

    def part_dense(self, name):
        bias = self._bias(name)
        return self._weight(name).detach().clone(), None if bias is None else bias.detach().clone()

    def part_parameters(self, name):
        return [p for p in (self._weight(name), self._bias(name)) if p is not None]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        names = list(self.parts)
        weights = [self._weight(n) for n in names]
        weight = weights[0] if len(weights) == 1 else torch.cat(weights)
        bias = None
        if any(self.parts[n].bias for n in names):
            pieces = [self._bias(n) if self.parts[n].bias else weight.new_zeros(self.parts[n].size) for n in names]
            bias = pieces[0] if len(pieces) == 1 else torch.cat(pieces)
        y = F.linear(x, weight, bias)
        if len(names) == 1:
            return {names[0]: y}
        return dict(zip(names, y.split([self.parts[n].size for n in names], dim=-1)))

    def cost(self, rows):
        """One matmul of total output ``S`` (``2·in·S`` per row) and, if any part has a bias, one bias add over all
        ``S`` outputs (the parts without a bias add zeros); backward the input and weight gradients (``4·in·S`` per
        row) and the gradient of the concatenated bias, the output gradient summed over rows: ``(rows − 1)·S``."""
        total = sum(p.size for p in self.parts.values())
        biased = sum(p.size for p in self.parts.values() if p.bias)
        added = total if biased else 0
        matmul = 2 * self.in_features * total
        itemsize = next(iter(self.parameters())).element_size()
        return Cost(params=self.in_features * total + biased, forward_flops=rows * (matmul + added),
                    backward_flops=rows * 2 * matmul + (rows - 1) * added,
                    saved_bytes=rows * self.in_features * itemsize)

    @property
    def input_uses(self):
        return 1


def check_branch(kind: str) -> str:
    """``kind`` if it is a branch strategy or a registered layer kind; a ``ValueError`` listing both otherwise."""
    if isinstance(kind, str) and (kind in BRANCHES or kind in available_layers()):
        return kind
    valid = sorted(set(BRANCHES.names()) | set(available_layers()))
    raise ValueError(f"unknown branch {kind!r}; valid names: {', '.join(valid)}")


def branch_needs_rank(kind: str) -> bool:
    """Whether layers of registered kind ``kind`` take a ``rank`` argument (then a quadratic layer passes its own)."""
    if check_branch(kind) in BRANCHES:
        return False
    return "rank" in inspect.signature(layer_class(kind)).parameters


class _ScaledPart(nn.Module):
    """``scale ⊙ layer(x) + bias`` with ``layer`` a bias-free structured layer."""

    def __init__(self, layer: StructuredLayer, bias: bool, *, device=None, dtype=None):
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.layer = layer
        self.scale = nn.Parameter(torch.empty(layer.out_features, **factory))
        self.bias = nn.Parameter(torch.empty(layer.out_features, **factory)) if bias else None

    def forward(self, x):
        y = self.layer(x)
        return torch.addcmul(self.bias, self.scale, y) if self.bias is not None else self.scale * y

    def cost(self, rows: int) -> Cost:
        """The scale and bias on ``rows`` rows of ``size`` outputs, without the layer's own cost.

        Forward: ``scale ⊙ y`` (``mul``, 1 per element) or ``bias + scale ⊙ y`` (``addcmul``, 2). Backward, as
        autograd computes it: without a bias, ``g ⊙ scale`` for the layer's output and ``g ⊙ y`` summed over rows
        for the scale (``2·rows·size + (rows − 1)·size``); with a bias, ``addcmul``'s gradients multiply the other
        factor by its ``value`` (1) first: ``g ⊙ (scale·1)`` (``size + rows·size``) and ``g ⊙ (y·1)`` summed over
        rows (``2·rows·size + (rows − 1)·size``), and the bias gradient ``g`` summed over rows
        (``(rows − 1)·size``). Saves the layer's output ``y`` for the scale's gradient.
        """
        size = self.scale.numel()
        sums = (rows - 1) * size  # a gradient of a (size,) parameter, summed over rows
        if self.bias is None:
            params, forward, backward = size, rows * size, 2 * rows * size + sums
        else:
            output_gradient, scale_gradient = size + rows * size, 2 * rows * size + sums
            params, forward, backward = 2 * size, 2 * rows * size, output_gradient + scale_gradient + sums
        return Cost(params=params, forward_flops=forward, backward_flops=backward,
                    saved_bytes=rows * size * self.scale.element_size())


class StructuredBranch(Branch):
    """One structured layer per part (kind ``kind``, built with ``bias=False`` and the branch options).

    Parameters of part ``name``: ``parts_.<name>.layer.*`` (the layer's own), ``parts_.<name>.scale`` ``(size,)``
    and ``parts_.<name>.bias`` ``(size,)``.
    """

    def __init__(self, in_features: int, parts: Sequence[Part], *, kind: str, device=None, dtype=None, **options):
        super().__init__(in_features, parts)
        self.kind = kind
        self.parts_ = nn.ModuleDict()
        for p in parts:
            layer = StructuredLayer.create(kind, in_features, p.size, bias=False, device=device, dtype=dtype, **options)
            self.parts_[p.name] = _ScaledPart(layer, p.bias, device=device, dtype=dtype)

    def reset_part(self, name):
        part = self.parts_[name]
        part.layer.reset_parameters()
        bound = _linear_bound(self.in_features)
        with torch.no_grad():
            part.scale.fill_(1.0)
            if part.bias is not None:
                part.bias.uniform_(-bound, bound)

    def set_constant(self, name, value):
        self._zero_bias_check(name, value)
        part = self.parts_[name]
        part.layer.reset_parameters()
        with torch.no_grad():
            part.scale.zero_()
            if part.bias is not None:
                part.bias.fill_(value)

    def part_dense(self, name):
        part = self.parts_[name]
        with torch.no_grad():
            weight = part.scale[:, None] * part.layer.to_dense()
            constant = part.layer.dense_bias()  # zero unless the layer has a constant of its own
            if part.bias is not None:
                return weight, part.bias.detach() + part.scale * constant
            return weight, (part.scale * constant) if constant.any() else None

    def part_parameters(self, name):
        return list(self.parts_[name].parameters())

    def forward(self, x):
        return {name: part(x) for name, part in self.parts_.items()}

    def cost(self, rows):
        """Each part's layer ``cost()`` plus its scale and bias (see :meth:`_ScaledPart.cost`)."""
        total = Cost(params=0, forward_flops=0, backward_flops=0, saved_bytes=0)
        for part in self.parts_.values():
            total = total + part.layer.cost(rows) + part.cost(rows)
        return total

    @property
    def input_uses(self):
        return len(self.parts_)


def make_branch(kind: str, in_features: int, parts: Sequence[Part], *, device=None, dtype=None, **options) -> Branch:
    """A branch of strategy ``kind``: a name in :data:`BRANCHES` or any registered layer kind."""
    if check_branch(kind) in BRANCHES:
        return BRANCHES.get(kind)(in_features, parts, device=device, dtype=dtype, **options)
    return StructuredBranch(in_features, parts, kind=kind, device=device, dtype=dtype, **options)
