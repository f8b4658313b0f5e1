"""Which implementation a transform runs: the native C kernels (CPU, float32/float64) or pure PyTorch."""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from .. import _native

__all__ = ["native_kernels", "native_status", "uses_native"]

_enabled = True


def uses_native(x: torch.Tensor) -> bool:
    """True when ``x`` will be transformed by the native kernels."""
    return (
        _enabled
        and x.device.type == "cpu"
        and x.dtype in (torch.float32, torch.float64)
        and _native.available()
    )


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
