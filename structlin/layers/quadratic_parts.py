"""What every layer built from a quadratic form shares: its parts, held by branches grouped by input.

:class:`QuadraticParts` is mixed into :class:`~structlin.Quadratic` (parts are linear maps) and
:class:`~structlin.layers.quadratic_conv.QuadraticConvNd` (parts are convolutions). The layer sets ``form``,
``branches`` (an ``nn.ModuleDict`` of branches, each computing the parts that read one input, see
:mod:`structlin.layers.branches`), ``_group_of`` (part → branch key) and ``_group_input`` (branch key → the
form's input it reads); the mixin gives the part-level operations that the init strategies, ``param_groups`` and
the conversions use, and runs the branches for :meth:`QuadraticForm.combine`.
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from ..costs import Cost

__all__ = ["QuadraticParts"]


class QuadraticParts:
    """Part-level access to a quadratic layer's branches (a mixin for ``nn.Module`` subclasses)."""

    def _branch(self, name: str):
        if name not in self._group_of:
            raise ValueError(f"unknown part {name!r} of form {type(self.form).__name__}; parts: {list(self._group_of)}")
        return self.branches[self._group_of[name]]

    def reset_part(self, name: str) -> None:
        """Redraw part ``name`` as a random map of the default scale of ``nn.Linear`` (or ``nn.Conv``)."""
        self._branch(name).reset_part(name)

    def set_constant(self, name: str, value: float) -> None:
        """Make part ``name`` output the constant ``value`` (zero weights, or zero scale for structured parts)."""
        self._branch(name).set_constant(name, value)

    def part_dense(self, name: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Part ``name``'s ``(weight, bias or None)``, copies: a linear part computes ``x_in @ weight.T + bias``
        (``weight`` ``(size, in)``); a convolutional part convolves with ``weight`` ``(size, in/groups, *kernel)``."""
        return self._branch(name).part_dense(name)

    def _parameters_of(self, first_order: bool) -> list[nn.Parameter]:
        specs = [spec for spec in self.form.parts if spec.first_order == first_order]
        return [p for spec in specs for p in self._branch(spec.name).part_parameters(spec.name)]

    def quadratic_parameters(self) -> list[nn.Parameter]:
        """The parameters of every part except the first-order one (the ones ReLinear trains more slowly)."""
        return self._parameters_of(first_order=False)

    def first_order_parameters(self) -> list[nn.Parameter]:
        """The parameters of the first-order part (the one that carries the map of a conversion)."""
        return self._parameters_of(first_order=True)

    def _run(self, source: str, value: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every part reading the form's input ``source`` (its value ``value``): ``{part: output}``."""
        outputs: dict[str, torch.Tensor] = {}
        for key, branch in self.branches.items():
            if self._group_input[key] == source:
                outputs.update(branch(value))
        return outputs

    def _gradient_sums(self, elements: Mapping[str, int]) -> Cost:
        """The adds autograd does to sum the gradients of each form input read by ``k > 1`` autograd nodes (the
        form's own ``reads`` and each branch's ``input_uses``): ``(k − 1)`` times the input's ``elements``."""
        total = Cost()
        for source in self.form.inputs:
            uses = self.form.reads.get(source, 0) + sum(
                branch.input_uses for key, branch in self.branches.items() if self._group_input[key] == source)
            total = total + Cost(backward_flops=max(uses - 1, 0) * elements[source])
        return total
