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
from ._common import Strategy, random_signs, resolve_strategy

__all__ = ["ACDCInit", "ACDC_INITS", "resolve_acdc_init", "Paper", "Identity", "VariancePreserving", "Authors"]


class ACDCInit(Strategy):
    """Base class: fill ``A`` and ``D`` (each ``(depth, n)``) in place.

    ``activation_gain`` is the gain of the activation between blocks (``torch.nn.init.calculate_gain``:
    1 for none, √2 for ReLU); schemes that keep the signal's scale through ReLUs use it.
    """

    def init_(self, A: torch.Tensor, D: torch.Tensor, activation_gain: float = 1.0) -> None:
        raise NotImplementedError


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


@ACDC_INITS.register("authors")
class Authors(ACDCInit):
    """The ACDC authors' start (their Torch module ``FastACDC``): ``A = D = 1``, or with ``signs`` independent
    random signs ``±1`` (each with probability ½), then, with ``noise > 0``, uniform noise in ``[−noise, noise]``
    added to every entry (their ``rand_init`` option is ``noise=0.01``, their ``sign_init`` ``signs=True``).
    By name (``init="authors"``) it is exactly 1, their default. Diagonal biases start at zero (the layer
    zeroes them)."""

    def __init__(self, noise: float = 0.0, signs: bool = False):
        if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not noise >= 0:
            raise ValueError(f"noise must be a number >= 0 (the half-width of the uniform noise), got {noise!r}")
        self.noise, self.signs = float(noise), bool(signs)

    def init_(self, A, D, activation_gain=1.0):
        for diagonal in (A, D):
            if self.signs:
                diagonal.copy_(random_signs(diagonal))
            else:
                diagonal.fill_(1.0)
            if self.noise > 0:
                diagonal.add_(torch.empty_like(diagonal).uniform_(-self.noise, self.noise))


@ACDC_INITS.register("variance-preserving")
class VariancePreserving(ACDCInit):
    """Keep the mean square of the signal through activations between blocks.

    ``A = √g · ε_A ⊙ N(1, σ²)`` and ``D = √g · ε_D ⊙ N(1, σ²)`` with independent random signs ``ε = ±1`` and
    ``g`` the activation's gain (√2 for ReLU). Each block is then ``≈ g`` times an orthogonal map that mixes the
    features (``C⁻¹ diag(ε_D) C``), so it multiplies the mean square by ``≈ g²`` and hands the activation a
    symmetric signal, whose mean square a ReLU halves. The last block, which no activation follows, gets
    ``g = 1``. Diagonals near +1 would not do: near-identity blocks do not mix, so every ReLU would zero
    another half of the surviving features.
    """

    def __init__(self, sigma: float = 0.01):
        self.sigma = float(sigma)

    def init_(self, A, D, activation_gain=1.0):
        scale = torch.full((A.shape[0], 1), math.sqrt(activation_gain), dtype=A.dtype, device=A.device)
        scale[-1] = 1.0
        for diagonal in (A, D):
            signs = random_signs(diagonal)
            diagonal.normal_(1.0, self.sigma).mul_(signs).mul_(scale)


def resolve_acdc_init(init: Union[str, ACDCInit]) -> ACDCInit:
    """A strategy object from a name or an object; raises a ``ValueError`` listing the valid names otherwise."""
    return resolve_strategy(init, ACDC_INITS, ACDCInit, "init_(A, D, gain)")
