"""Initialization strategies for ACDC's diagonals.

A strategy is an object with ``init_(A, D, activation_gain)`` that fills the ``(depth, n)`` parameters in place
(under ``torch.no_grad``), or a registered name. Register your own class with ``@ACDC_INITS.register("name")``;
it is built with no arguments when named.
"""

from __future__ import annotations

import math
from typing import Union

import torch

from ..registry import Registry

__all__ = ["ACDCInit", "ACDC_INITS", "resolve_acdc_init", "Paper", "Identity", "VariancePreserving"]


class ACDCInit:
    """Base class: fill ``A`` and ``D`` (each ``(depth, n)``) in place.

    ``activation_gain`` is the gain of the activation between blocks (``torch.nn.init.calculate_gain``:
    1 for none, √2 for ReLU); schemes that keep the signal's scale through ReLUs use it.
    """

    def init_(self, A: torch.Tensor, D: torch.Tensor, activation_gain: float = 1.0) -> None:
        raise NotImplementedError

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


ACDC_INITS: Registry[type] = Registry("ACDC init strategy")


@ACDC_INITS.register("paper")
class Paper(ACDCInit):
    """Diagonals drawn around 1: ``A, D ~ N(1, σ²)`` with ``σ = 0.01`` by default.

    The ACDC paper (Moczulski et al., 2016) initializes the diagonals near the identity so that a product of
    many of them keeps its scale; the authors' code starts at exactly 1 with optional uniform noise of ±0.01,
    and a later PyTorch port draws ``N(1, 0.01²)``, which is the default here.
    """

    def __init__(self, sigma: float = 0.01):
        self.sigma = float(sigma)

    def init_(self, A, D, activation_gain=1.0):
        A.normal_(1.0, self.sigma)
        D.normal_(1.0, self.sigma)


@ACDC_INITS.register("identity")
class Identity(ACDCInit):
    """``A = D = 1``: every block is the identity map (the cascade is the identity, or a permutation)."""

    def init_(self, A, D, activation_gain=1.0):
        A.fill_(1.0)
        D.fill_(1.0)


@ACDC_INITS.register("variance-preserving")
class VariancePreserving(ACDCInit):
    """Keep the second moment of the signal through activations: ``A, D ~ N(g^{1/2}, σ²)`` with ``g`` the
    activation's gain (√2 for ReLU), so each block multiplies the mean square by ``≈ g²`` and the activation
    after it (which halves the mean square of a symmetric signal, for ReLU) brings it back."""

    def __init__(self, sigma: float = 0.01):
        self.sigma = float(sigma)

    def init_(self, A, D, activation_gain=1.0):
        mean = math.sqrt(activation_gain)
        A.normal_(mean, self.sigma)
        D.normal_(mean, self.sigma)


def resolve_acdc_init(init: Union[str, ACDCInit]) -> ACDCInit:
    """A strategy object from a name or an object; raises a ``ValueError`` listing the valid names otherwise."""
    if isinstance(init, str):
        return ACDC_INITS.get(init)()
    if isinstance(init, ACDCInit) or callable(getattr(init, "init_", None)):
        return init
    raise ValueError(f"init must be a name in {ACDC_INITS.names()} or an object with init_(A, D, gain); got {init!r}")
