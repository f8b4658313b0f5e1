"""Depth strategies: how many blocks a cascade of size ``n`` gets.

A depth is an ``int`` ≥ 1, a registered name, or any callable ``f(n) -> int``. Register your own with
``@DEPTHS.register("name")`` on a function of ``n``.
"""

from __future__ import annotations

import math
from typing import Callable, Union

from ..registry import Registry

__all__ = ["DEPTHS", "resolve_depth", "Depth"]

Depth = Union[int, str, Callable[[int], int]]
DEPTHS: Registry[Callable[[int], int]] = Registry("depth strategy")


@DEPTHS.register("log2")
def log2_depth(n: int) -> int:
    """``⌈log₂ n⌉`` blocks (at least 1)."""
    return max(1, math.ceil(math.log2(n)))


def resolve_depth(depth: Depth, n: int) -> int:
    """The number of blocks ``depth`` gives for size ``n``; raises a clear error for anything else."""
    if isinstance(depth, str):
        depth = DEPTHS.get(depth)
    if callable(depth):
        depth = depth(n)
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth must be an int >= 1, a name in {DEPTHS.names()} or a callable n -> int; got {depth!r}")
    return depth
