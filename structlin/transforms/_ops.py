"""Registering structlin's transforms as differentiable ``torch.library`` custom ops.

A custom op is opaque to ``torch.compile`` (no graph break, the fake kernel gives output shapes) and visible to
``torch.utils.flop_counter.FlopCounterMode`` (which counts it with the registered formula instead of looking
inside). On a torch without ``torch.library.custom_op`` (older than 2.4) the same pieces become a plain
``torch.autograd.Function``.

Either is opaque to ``torch.func`` and forward-mode AD, so the callable returned here runs ``impl`` itself, which
takes its pure-PyTorch path there and is differentiable by their own rules (see :mod:`._backend`).
"""

from __future__ import annotations

import functools
import math
from typing import Callable

import torch

from ._backend import dispatch, refuse_when_transformed

__all__ = ["define_op", "define_linear_op", "autograd_function_op", "register_flops", "rows_of"]

_NAMESPACE = "structlin"


def rows_of(shape) -> int:
    """Number of rows a last-dimension transform of a tensor of ``shape`` acts on: ``prod(shape[:-1])``."""
    return math.prod(shape[:-1])


def autograd_function_op(name: str, impl: Callable, backward: Callable) -> Callable:
    """Wrap ``impl(x, option)`` as a ``torch.autograd.Function`` whose gradient is ``backward(grad, option)``.

    ``impl`` must be a linear map of ``x``; ``option`` is a non-tensor argument passed through unchanged. Where
    no gradient is recorded (grad mode off, or ``x`` not requiring one) ``impl`` runs without the Function,
    whose ``apply`` costs several microseconds a call.
    """

    def forward(ctx, x, option):
        ctx.option = option
        return impl(x, option)

    def backward_(ctx, grad):
        return backward(grad, ctx.option), None

    fn = type(name, (torch.autograd.Function,), {"forward": staticmethod(forward), "backward": staticmethod(backward_)})
    apply = fn.apply

    def call(x, option):
        if torch.is_grad_enabled() and x.requires_grad:
            return apply(x, option)
        return impl(x, option)

    return call


def define_op(name: str, impl: Callable):
    """``torch.library.custom_op("structlin::name", impl)``, whose kernel refuses to run under ``torch.func``
    transforms and forward-mode AD (:func:`~._backend.refuse_when_transformed`): reach it through a
    :func:`~._backend.dispatch` callable, which runs ``impl`` itself there."""
    return torch.library.custom_op(f"{_NAMESPACE}::{name}", refuse_when_transformed(name, impl), mutates_args=())


def define_linear_op(name: str, impl: Callable, backward: Callable, flops_per_row: Callable[[int, object], int]):
    """Register ``structlin::name(x, option) -> Tensor``, a linear map over the last dimension of ``x``.

    Args:
        name: the op's name in the ``structlin`` namespace.
        impl: ``impl(x, option) -> Tensor`` of the same shape as ``x``; ``option`` must be a ``str`` or ``bool``
            and carry a type annotation (the op's schema is inferred from it).
        backward: ``backward(grad, option) -> Tensor``, the adjoint applied to the output gradient. It must be
            built from differentiable ops (for double backward).
        flops_per_row: ``flops_per_row(n, option) -> int``, FLOPs of one transform of length ``n``.

    Returns:
        A callable ``op(x, option)``: the custom op; ``impl`` itself under ``torch.func`` transforms and
        forward-mode AD; and in plain eager code, where nothing needs to see the op, the same function as an
        ``autograd.Function`` without the custom op's dispatch cost (:func:`~._backend.dispatch`).
    """
    impl = _empty_passthrough(impl)
    if not hasattr(torch.library, "custom_op"):  # torch < 2.4
        return dispatch(autograd_function_op(name, impl, backward), impl)

    op = define_op(name, impl)

    @op.register_fake
    def _fake(x, option):
        return x.new_empty(x.shape)

    def setup_context(ctx, inputs, output):
        ctx.option = inputs[1]

    def backward_(ctx, grad):
        return backward(grad, ctx.option), None

    op.register_autograd(backward_, setup_context=setup_context)
    register_flops(name, lambda x_shape, option, *args, **kwargs: rows_of(x_shape) * flops_per_row(x_shape[-1], option))
    return dispatch(op, impl, autograd_function_op(name, impl, backward))


def _empty_passthrough(impl: Callable) -> Callable:
    """A linear map sends an empty batch to an empty batch; some FFT backends reject empty inputs."""

    @functools.wraps(impl)
    def wrapped(x, option):
        return x.new_empty(x.shape) if x.numel() == 0 else impl(x, option)

    return wrapped


def register_flops(name: str, formula: Callable) -> None:
    """Register ``formula(*input_shapes_and_args, out_shape=...) -> int`` as the FLOP count of ``structlin::name``
    with ``torch.utils.flop_counter`` (a no-op on torch versions without registrable formulas)."""
    try:
        from torch.utils.flop_counter import register_flop_formula
    except ImportError:
        return
    register_flop_formula(getattr(getattr(torch.ops, _NAMESPACE), name))(formula)
