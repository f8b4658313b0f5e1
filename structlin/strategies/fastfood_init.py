r"""Initialization strategies for Fastfood's diagonals ``B``, ``G`` and ``S``.

A strategy is an object with ``init_(B, G, S)`` that fills the ``(blocks, d)`` tensors in place (under
``torch.no_grad``), or a registered name. The layer computes ``S H̃ G Π H̃ B x`` with the orthonormal
``H̃ = H/√d`` (so the permutation ``Π`` is not the strategy's business: it is drawn by the layer). Register
your own class with ``@FASTFOOD_INITS.register("name")``; it is built with no arguments when named.
"""

from __future__ import annotations

import math
from typing import Optional, Union

import torch

from ..registry import Registry
from ._common import Strategy, random_signs, resolve_strategy

__all__ = ["FastfoodInit", "FASTFOOD_INITS", "resolve_fastfood_init", "Paper", "Orthogonal"]


class FastfoodInit(Strategy):
    """Base class: fill ``B``, ``G`` and ``S`` (each ``(blocks, d)``) in place."""

    def init_(self, B: torch.Tensor, G: torch.Tensor, S: torch.Tensor) -> None:
        raise NotImplementedError


FASTFOOD_INITS: Registry[type] = Registry("Fastfood init strategy")


def _chi(shape, dof: int, like: torch.Tensor) -> torch.Tensor:
    """Samples of the χ distribution with ``dof`` degrees of freedom (the length of a standard Gaussian
    vector in ``dof`` dimensions), drawn as ``√(2 Γ(dof/2, 1))``."""
    if like.is_meta:  # nothing to draw (construction on the meta device)
        return torch.empty(shape, device=like.device, dtype=like.dtype)
    cpu = {"dtype": torch.float64, "device": "cpu"}  # drawn on the CPU whatever the default device
    gamma = torch.distributions.Gamma(torch.tensor(dof / 2.0, **cpu), torch.tensor(1.0, **cpu))
    return gamma.sample(shape).mul_(2).sqrt_().to(device=like.device, dtype=like.dtype)


@FASTFOOD_INITS.register("paper")
class Paper(FastfoodInit):
    r"""The Fastfood paper's draw (Le, Sarlós & Smola, 2013): each block behaves like a Gaussian random matrix.

    ``B_i = ±1`` uniformly, ``G_i ~ N(0, 1)``, and ``S_i = (√d/σ) · s_i / ‖G‖_F`` with ``s_i ~ χ_d`` and
    ``‖G‖_F`` the Frobenius norm of the block's ``G``. With the unnormalized ``H`` the paper writes
    ``V = (1/(σ√d)) S' H G Π H B`` with ``S'_i = s_i / ‖G‖_F``; ``H = √d H̃`` turns that into the ``S`` above.
    Every row of ``V`` then has length ``s_i / σ`` — that of a row of i.i.d. ``N(0, 1/σ²)`` entries — because the
    rows of ``H G Π H B`` all have length ``√d ‖G‖_F``. (The long version of the paper prints the exponent of
    ``‖G‖_F`` as −½ in one place; −1 is the one that gives these row lengths.)

    Args:
        sigma: the Gaussian's scale. ``None`` (the default) is ``σ = √d``: unit gain, rows of length
            ``≈ 1`` like a matrix of ``N(0, 1/d)`` entries, so ``E‖V x‖² = ‖x‖²`` and the layer can stand in for
            ``nn.Linear`` without rescaling. A kernel bandwidth ``σ`` gives the random-feature map of
            ``exp(−‖x − y‖² / (2σ²))`` (see :mod:`structlin.layers.random_features`).
    """

    def __init__(self, sigma: Optional[float] = None):
        if sigma is not None and not (isinstance(sigma, (int, float)) and sigma > 0):
            raise ValueError(f"sigma must be a positive number or None, got {sigma!r}")
        self.sigma = None if sigma is None else float(sigma)

    def init_(self, B, G, S):
        d = B.shape[-1]
        B.copy_(random_signs(B))
        G.normal_()
        scale = 1.0 if self.sigma is None else math.sqrt(d) / self.sigma
        norms = G.norm(dim=-1, keepdim=True)
        S.copy_(_chi(S.shape, d, S) * scale / norms)


@FASTFOOD_INITS.register("orthogonal")
class Orthogonal(FastfoodInit):
    """Random signs for ``B`` and ``G``, ``S = 1``: every block ``H̃ G Π H̃ B`` is then exactly orthogonal (a
    product of orthogonal matrices), so a square single-block layer preserves norms exactly, not only on
    average. A start for deep stacks of Fastfood layers where the paper's row-length spread compounds."""

    def init_(self, B, G, S):
        B.copy_(random_signs(B))
        G.copy_(random_signs(G))
        S.fill_(1.0)


def resolve_fastfood_init(init: Union[str, FastfoodInit]) -> FastfoodInit:
    """A strategy object from a name or an object; raises a ``ValueError`` listing the valid names otherwise."""
    return resolve_strategy(init, FASTFOOD_INITS, FastfoodInit, "init_(B, G, S)")
