"""Pieces every family of init strategies shares: name-or-object resolution and random signs."""

from __future__ import annotations

import torch

from ..registry import Registry


class Strategy:
    """Base of every strategy class: its ``repr`` names the class and its settings (the instance's fields)."""

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


def resolve_strategy(value, registry: Registry, base: type, interface: str):
    """``registry``'s strategy built with no arguments for a name, or ``value`` itself when it is a ``base`` or
    has the method ``interface`` names (e.g. ``"init_(A, D, gain)"``); a ``ValueError`` listing the names otherwise."""
    if isinstance(value, str):
        return registry.get(value)()
    method = interface.split("(")[0]
    if isinstance(value, base) or callable(getattr(value, method, None)):
        return value
    raise ValueError(f"init must be a name in {registry.names()} or an object with {interface}; got {value!r}")


def random_signs(like: torch.Tensor) -> torch.Tensor:
    """Independent ±1 of ``like``'s shape, dtype and device (drawn from torch's global generator)."""
    return torch.randint(0, 2, like.shape, device=like.device).to(like.dtype).mul_(2).sub_(1)
