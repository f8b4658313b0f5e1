"""The forms of a factorized quadratic layer: which linear parts it has and how it combines them.

A form lists its parts (:class:`PartSpec`: name, which input it reads, output size, bias, whether it carries the
layer's first-order map, and its value under ``init="linear-start"``) and computes the output from a function
``run(input_name, tensor) -> {part: output}`` that evaluates every part reading that input.

One registry serves every layer built from forms: :class:`~structlin.Quadratic`, where a part is a linear map
of the last dimension, and :class:`~structlin.QuadraticConv2d` (1-D and 3-D alike), where a part is a
convolution and tensors are ``(N, C, *spatial)``. A form's ``combine`` only takes elementwise products and sums of
whole tensors, so it runs unchanged on both; what a convolutional layer needs besides is where each input lies
(:meth:`QuadraticForm.on_input_grid`) and the element counts its ``elementwise_cost`` is given.

Register your own with ``@QUADRATIC_FORMS.register("name")`` on a :class:`QuadraticForm` subclass.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch

from ..costs import Cost
from ..registry import Registry

__all__ = ["PartSpec", "QuadraticForm", "QUADRATIC_FORMS", "Xu", "Fan", "LowRankForm"]

Run = Callable[[str, torch.Tensor], dict]


class PartSpec(NamedTuple):
    """A linear part of a form.

    ``input`` is ``"x"`` or a name the form computes (listed with its size in the form's ``inputs``); ``size`` is
    ``"out"`` or ``"rank"``; ``first_order`` marks the part that carries the layer's linear map under
    ``linear-start`` and ``from_linear`` (every other part's parameters are *quadratic* parameters, see
    :func:`structlin.param_groups`); ``start`` is ``None`` (a random linear map) or the constant the part
    outputs under ``linear-start``.
    """

    name: str
    input: str
    size: str
    bias: bool
    first_order: bool = False
    start: float | None = None

    @property
    def needs_bias(self) -> bool:
        """Whether the part keeps its bias in a layer built with ``bias=False``: it starts at a non-zero constant
        (the second factor of a product starts at 1), which only its bias can output."""
        return self.bias and self.start is not None and self.start != 0


class QuadraticForm:
    """Base class of the forms; subclasses set ``parts`` and implement ``combine`` and ``elementwise_cost``."""

    name: str = ""
    #: the size of each input the parts read: ``"in"`` or ``"rank"``
    inputs: dict[str, str] = {"x": "in"}
    parts: tuple[PartSpec, ...] = ()
    #: how many of ``combine``'s own ops read each input, besides the branches (autograd sums the gradients of
    #: an input read more than once; the layer's ``cost()`` counts those sums)
    reads: dict[str, int] = {}
    #: whether the form itself needs ``rank``
    needs_rank: bool = False
    formula: str = ""

    def combine(self, run: Run, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def elementwise_cost(self, rows: int, in_features: int, out_features: int, rank: int | None, itemsize: int) -> Cost:
        """FLOPs of the form's own elementwise ops and the bytes of the activations they save (the sums of the
        gradients of an input read more than once are counted by the layer, from ``reads`` and the branches).

        The ops are elementwise, so every term is a count per element of a tensor of ``in_features``,
        ``out_features`` or ``rank`` values per row, times ``rows``. A convolutional layer calls it with
        ``rows = 1`` and, as the sizes, the element counts of its whole tensors: ``N · C_in · (input positions)``,
        ``N · C_out · (output positions)`` and ``N · rank · (output positions)``.
        """
        raise NotImplementedError

    def on_input_grid(self, source: str) -> bool:
        """Whether input ``source`` lies on the grid of the layer's input (``x`` and what the form computes from it
        elementwise, such as ``x ⊙ x``) rather than on the output grid (what it computes from the parts'
        outputs, such as ``(U x) ⊙ (V x)``). A convolutional layer reads the first with convolutions of its
        kernel and the second with 1×1 convolutions. By default the inputs of size ``"in"`` are on the input
        grid; override this for a form where that does not hold."""
        return self.inputs[source] == "in"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


QUADRATIC_FORMS: Registry[type] = Registry("quadratic form")


@QUADRATIC_FORMS.register("xu")
class Xu(QuadraticForm):
    """``y = (W_a x + b_a) ⊙ (W_b x + b_b) + W_c x + b_c`` (Xu et al.). Parts ``a``, ``b``, ``c``.

    Linear start: ``a`` random (it carries the map), ``b`` the constant 1, ``c`` the constant 0.
    """

    name = "xu"
    parts = (
        PartSpec("a", "x", "out", True, first_order=True),
        PartSpec("b", "x", "out", True, start=1.0),
        PartSpec("c", "x", "out", True, start=0.0),
    )
    formula = "(W_a x + b_a) * (W_b x + b_b) + W_c x + b_c"

    def combine(self, run, x):
        o = run("x", x)
        return torch.addcmul(o["c"], o["a"], o["b"])

    def elementwise_cost(self, rows, in_features, out_features, rank, itemsize):
        # forward: addcmul, a multiply and an add per output; backward: each factor's gradient g·(other·1), two
        # multiplies per output each (autograd's addcmul backward scales by value=1); saved: both factors
        return Cost(0, 2 * rows * out_features, 4 * rows * out_features, 2 * rows * out_features * itemsize)


@QUADRATIC_FORMS.register("fan")
class Fan(QuadraticForm):
    """``y = (W_r x + b_r) ⊙ (W_g x + b_g) + W_b (x ⊙ x) + c`` (Fan et al.). Parts ``r``, ``g``, ``b`` (``b``'s bias
    is ``c``).

    Linear start (ReLinear): ``r`` random (it carries the map), ``g`` the constant 1 (``W_g = 0, b_g = 1``), ``b``
    the constant 0 (``W_b = 0, c = 0``).
    """

    name = "fan"
    inputs = {"x": "in", "x*x": "in"}
    reads = {"x": 1}  # the square
    parts = (
        PartSpec("r", "x", "out", True, first_order=True),
        PartSpec("g", "x", "out", True, start=1.0),
        PartSpec("b", "x*x", "out", True, start=0.0),
    )
    formula = "(W_r x + b_r) * (W_g x + b_g) + W_b (x * x) + c"

    def combine(self, run, x):
        o = run("x", x)
        s = run("x*x", x.square())
        return torch.addcmul(s["b"], o["r"], o["g"])

    def elementwise_cost(self, rows, in_features, out_features, rank, itemsize):
        # forward: square (pow) per input, addcmul (multiply, add) per output; backward: the square's
        # g·(2·x.pow(1)) (pow and two multiplies per input), addcmul's two factor gradients g·(other·1) (two
        # multiplies each per output); saved: x (for the square) and both factors
        return Cost(0, rows * (in_features + 2 * out_features), rows * (3 * in_features + 4 * out_features),
                    rows * (in_features + 2 * out_features) * itemsize)


@QUADRATIC_FORMS.register("lowrank")
class LowRankForm(QuadraticForm):
    """``y = W x + b + P((U x) ⊙ (V x))`` (QuadraNet V2), ``U, V`` of shape ``(rank, in)``, ``P`` ``(out, rank)``.

    Parts ``w``, ``u``, ``v``, ``p`` (only ``w`` has a bias). Linear start: ``w`` random (it carries the map),
    ``u`` and ``v`` random, ``p`` the constant 0, as LoRA starts.
    """

    name = "lowrank"
    inputs = {"x": "in", "u*v": "rank"}
    parts = (
        PartSpec("w", "x", "out", True, first_order=True),
        PartSpec("u", "x", "rank", False),
        PartSpec("v", "x", "rank", False),
        PartSpec("p", "u*v", "out", False, start=0.0),
    )
    needs_rank = True
    formula = "W x + b + P((U x) * (V x))"

    def combine(self, run, x):
        o = run("x", x)
        return o["w"] + run("u*v", o["u"] * o["v"])["p"]

    def elementwise_cost(self, rows, in_features, out_features, rank, itemsize):
        # forward: the rank-sized product and the final add; backward: the two factors' gradients (the add's
        # gradient passes through); saved: factors
        return Cost(0, rows * (rank + out_features), 2 * rows * rank, 2 * rows * rank * itemsize)


def resolve_form(form) -> QuadraticForm:
    """A form object from a name or an object."""
    if isinstance(form, str):
        return QUADRATIC_FORMS.get(form)()
    if isinstance(form, QuadraticForm):
        return form
    raise ValueError(f"form must be a name in {QUADRATIC_FORMS.names()} or a QuadraticForm; got {form!r}")
