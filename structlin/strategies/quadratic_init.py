"""Initialization strategies for quadratic layers.

A strategy is an object with ``init_(layer)`` that sets every part of a :class:`~structlin.Quadratic` through the
layer's ``reset_part(name)`` (a fresh random linear map) and ``set_constant(name, value)`` (a zero map plus the
constant ``value``; for structured branches a zero output scale, the structured weights staying random), reading
the parts from ``layer.form.parts``. Register your own class with ``@QUADRATIC_INITS.register("name")``; it is
built with no arguments when named.
"""

from __future__ import annotations

from typing import Union

from ..registry import Registry
from ._common import resolve_strategy

__all__ = ["QuadraticInit", "QUADRATIC_INITS", "resolve_quadratic_init", "LinearStart", "RandomInit"]


class QuadraticInit:
    """Base class: set every part of ``layer`` in place."""

    def init_(self, layer) -> None:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


QUADRATIC_INITS: Registry[type] = Registry("quadratic init strategy")


@QUADRATIC_INITS.register("linear-start")
class LinearStart(QuadraticInit):
    """Start as an exactly linear map that still trains every parameter.

    The first-order part is a random linear map; each other part is set to its form's start value: the second
    factor of a product outputs the constant 1 (so the first factor's and its own gradients are non-zero at
    once: ReLinear's ``W_g = 0, b_g = 1``), additive quadratic terms output 0 (``W_b = 0, c = 0``; the low-rank
    form's ``P = 0`` with ``U, V`` random, as LoRA). Every dense parameter then has a non-zero gradient on the
    first step; the structured weights behind a zero output scale, and ``U, V`` behind ``P = 0``, on the second.
    """

    def init_(self, layer) -> None:
        for part in layer.form.parts:
            if part.start is None:
                layer.reset_part(part.name)
            else:
                layer.set_constant(part.name, part.start)


@QUADRATIC_INITS.register("random")
class RandomInit(QuadraticInit):
    """Every part a random linear map of ``nn.Linear``'s scale (training from scratch)."""

    def init_(self, layer) -> None:
        for part in layer.form.parts:
            layer.reset_part(part.name)


def resolve_quadratic_init(init: Union[str, QuadraticInit]) -> QuadraticInit:
    """A strategy object from a name or an object; raises a ``ValueError`` listing the valid names otherwise."""
    return resolve_strategy(init, QUADRATIC_INITS, QuadraticInit, "init_(layer)")
