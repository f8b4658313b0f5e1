"""Which implementation a transform runs: the native C kernels (CPU, float32/float64) or pure PyTorch; and
which entry it goes through: the ``torch.library`` custom op, or its composite form under ``torch.func`` and
forward-mode AD.

The custom ops are opaque: they carry a reverse-mode rule only, so ``torch.func`` transforms, forward-mode AD
(``torch.autograd.forward_ad``) and the vmap that ``torch.autograd.grad(..., is_grads_batched=True)`` runs
cannot see through them. Every op therefore has a *composite* form: the implementation itself, run on its
pure-PyTorch path (FFTs, matmuls, gathers, elementwise ops), which those transforms differentiate and batch with
their own rules. :func:`dispatch` calls the custom op normally and the composite form while :func:`transformed`
is true, with the native kernels off for its duration. A custom op reached directly (``torch.ops.structlin.*``)
under a transform refuses to run (:func:`refuse_when_transformed`) rather than drop tangents or batch dimensions.
The ops' backward functions go through :func:`dispatch` too, so a backward run under a transform (batched or
dual ``grad_outputs``) is exact as well. Not supported: differentiating the backward ops of ``acdc_cascade`` and
``fastfood`` with plain autograd (``create_graph=True``, ``torch.autograd.functional.hessian``); autograd raises,
naming the op. Under ``torch.func`` every order of derivative works.

Cached constants (twiddles, index tables) are built by :func:`constant_cache` outside any transform, so one first
needed inside a transform does not escape it wrapped for that transform's level.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import threading
from typing import Callable, Iterator

import torch
import torch.autograd.forward_ad as _forward_ad

from .. import _native

__all__ = ["native_kernels", "native_status", "uses_native", "native_for", "transformed", "functorch_active",
           "in_composite", "dispatch", "plain_eager", "refuse_when_transformed", "constant_cache"]

_enabled = True


class _ThreadState(threading.local):
    composite = False  # a composite form is running on this thread


_state = _ThreadState()

functorch_active = getattr(torch._C, "_are_functorch_transforms_active", lambda: False)
_legacy_batched = getattr(getattr(torch._C, "_functorch", None), "is_legacy_batchedtensor", lambda t: False)


def transformed(x: torch.Tensor) -> bool:
    """True inside a ``torch.func`` transform (``grad``, ``vjp``, ``jacrev``, ``jvp``, ``jacfwd``, ``hessian``,
    ``vmap``, ``functionalize``), while a forward-AD dual level is open, or when ``x`` (an op's first argument) is
    batched by the vmap ``torch.autograd.grad(..., is_grads_batched=True)`` runs: tensors may then carry batch
    dimensions or tangents that the native kernels and the custom ops' reverse-mode rules cannot see.

    A few cheap reads; ``torch.compile`` traces it without a graph break (the legacy-vmap test, which dynamo
    cannot trace, is skipped while compiling)."""
    return (
        functorch_active()
        or _forward_ad._current_level >= 0
        or (not torch.compiler.is_compiling() and _legacy_batched(x))
    )


def in_composite() -> bool:
    """True while a composite form runs (:func:`dispatch`): the ops' implementations take their pure-PyTorch path."""
    return _state.composite


def uses_native(x: torch.Tensor) -> bool:
    """True when ``x`` will be transformed by the native kernels (never inside a composite form)."""
    return native_for(x.device.type, x.dtype)


def native_for(device_type: str, dtype: torch.dtype) -> bool:
    """True when tensors of ``dtype`` on a device of type ``device_type`` will be transformed by the native
    kernels (never inside a composite form)."""
    return (
        _enabled
        and not _state.composite
        and device_type == "cpu"
        and dtype in (torch.float32, torch.float64)
        and _native.available()
    )


_PLAIN = (torch.Tensor, torch.nn.Parameter)


def plain_eager(args) -> bool:
    """True when nothing needs to see an op's call: not compiling, no dispatch mode active (``FlopCounterMode``,
    ``FakeTensorMode``, structlin's report), and the op's data arguments (the first three, lists included; the rest
    are index tables and flags) plain, non-meta tensors; options among them (a ``norm`` string, a flag, None) are
    not tensors and do not count."""
    if torch.compiler.is_compiling() or torch._C._len_torch_dispatch_stack():
        return False
    for a in args[:3]:
        for t in a if isinstance(a, (list, tuple)) else (a,):
            if isinstance(t, torch.Tensor) and (type(t) not in _PLAIN or t.is_meta):
                return False
    return True


def dispatch(op: Callable, composite: Callable, eager: Callable | None = None) -> Callable:
    """A callable that runs ``op`` (a custom op), or, while :func:`transformed` is true of the first argument,
    ``composite`` (the same function of the same arguments, on its pure-PyTorch path: the native kernels are off
    until it returns). With ``eager`` (the same function again, without the custom op's dispatch: an
    ``autograd.Function``, or the implementation itself), that runs instead of ``op`` when
    :func:`plain_eager` is true: the custom op's Python dispatch costs tens of microseconds a call, which is
    most of a small layer's time; whatever needs to see the op (``torch.compile``, dispatch modes such as
    ``FlopCounterMode``) still gets it."""

    @functools.wraps(composite)
    def run(*args, **kwargs):
        if not transformed(args[0]):
            if eager is not None and plain_eager(args):
                return eager(*args, **kwargs)
            return op(*args, **kwargs)
        previous, _state.composite = _state.composite, True
        try:
            return composite(*args, **kwargs)
        finally:
            _state.composite = previous

    return run


def refuse_when_transformed(name: str, impl: Callable) -> Callable:
    """``impl`` as the kernel of custom op ``structlin::name``: it raises if reached under :func:`transformed`,
    which only a direct ``torch.ops.structlin.name`` call does (the public functions take the composite form)."""

    @functools.wraps(impl)
    def kernel(*args, **kwargs):
        if transformed(args[0]):
            raise RuntimeError(
                f"structlin::{name} was called directly under a torch.func transform or forward-mode AD, which "
                "custom ops do not support (tangents and batch dimensions would be lost); call structlin's public "
                "function instead, which runs a differentiable composite form there"
            )
        return impl(*args, **kwargs)

    kernel.__signature__ = inspect.signature(impl, eval_str=True)  # the op's schema is inferred from its types
    return kernel


def constant_cache(maxsize: int) -> Callable:
    """``functools.lru_cache`` for functions that build constant tensors (twiddles, index tables) from hashable
    arguments. They are built as plain tensors whatever the caller's context: outside ``torch.func`` transforms
    (a tensor made inside one is wrapped for its level, and would escape it from the cache), inference mode
    and autograd."""

    def decorate(build: Callable) -> Callable:
        @functools.lru_cache(maxsize=maxsize)
        def cached(*args, **kwargs):
            with torch._C._DisableFuncTorch(), torch.inference_mode(False), torch.no_grad():
                return build(*args, **kwargs)

        @functools.wraps(build)
        def get(*args, **kwargs):
            if torch.compiler.is_compiling():  # traced: the constants become part of the compiled program
                return build(*args, **kwargs)
            return cached(*args, **kwargs)

        get.cache_info, get.cache_clear = cached.cache_info, cached.cache_clear
        return get

    return decorate


@contextlib.contextmanager
def native_kernels(enabled: bool) -> Iterator[None]:
    """Context manager that turns the native CPU kernels on or off (the pure-PyTorch path runs when off).

    Both paths compute the same function; this exists to compare them. Not thread-safe: it flips a module flag.
    """
    global _enabled
    previous, _enabled = _enabled, bool(enabled)
    try:
        yield
    finally:
        _enabled = previous


def native_status() -> str:
    """A one-line description of the native kernels: loaded, disabled, or why they could not be built."""
    return _native.native_status()
