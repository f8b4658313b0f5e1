r"""Random Fourier features through a non-adaptive Fastfood map (Le, Sarlós & Smola 2013).

For a shift-invariant kernel ``k(x, y) = E_ω cos(ω·(x − y))`` the features
``z(x) = [cos(V x), sin(V x)] / √m`` of ``m`` frequencies (the rows of ``V``) satisfy
``z(x)·z(y) = (1/m) Σ_i cos(v_i·(x − y)) ≈ k(x, y)``. For the Gaussian kernel
``exp(−‖x − y‖² / (2σ²))`` the frequencies are ``N(0, I/σ²)``; Fastfood's ``V = (1/(σ√d)) S H G Π H B`` has rows
of that distribution's length at ``O(m log d)`` cost instead of ``O(m d)`` for a dense Gaussian matrix.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..registry import Registry
from ..strategies.fastfood_init import Paper
from .fastfood import Fastfood

__all__ = ["RandomFeatures", "random_features", "KERNELS"]

#: Kernel name → ``spectral(sigma) -> FastfoodInit`` drawing the frequencies of that kernel.
KERNELS: Registry = Registry("random-feature kernel")


@KERNELS.register("rbf")
def _gaussian(sigma: float) -> Paper:
    """Frequencies ``N(0, I/σ²)``: the Gaussian kernel ``exp(−‖x − y‖² / (2σ²))``."""
    return Paper(sigma=sigma)


class RandomFeatures(nn.Module):
    r"""``z(x) = [cos(V x), sin(V x)] / √m`` with ``V`` a fixed Fastfood map of ``m = n_features / 2`` rows.

    ``z(x)·z(y)`` approximates ``exp(−‖x − y‖² / (2σ²))`` for ``kernel="rbf"``, with an error that shrinks
    like ``1/√m``. Nothing is trained: ``V``'s diagonals and permutations are buffers (drawn from torch's global
    RNG at construction, kept in the ``state_dict``).

    Args:
        in_features: size of the last dimension of the input.
        n_features: number of output features, even (a cosine and a sine per frequency).
        kernel: a name in :data:`KERNELS` (``"rbf"``).
        sigma: the kernel's bandwidth ``σ > 0``.

    Shape:
        input ``(..., in_features)`` → output ``(..., n_features)``.
    """

    def __init__(self, in_features: int, n_features: int, *, kernel: str = "rbf", sigma: float = 1.0, device=None, dtype=None):
        super().__init__()
        if isinstance(n_features, bool) or not isinstance(n_features, int) or n_features < 2 or n_features % 2:
            raise ValueError(f"n_features must be an even int >= 2 (a cosine and a sine per frequency), got {n_features!r}")
        spectral = KERNELS.get(kernel)
        self.kernel, self.sigma = kernel, float(sigma)
        self.in_features, self.n_features = in_features, n_features
        self.projection = Fastfood(in_features, n_features // 2, bias=False, learn=(), init=spectral(sigma), device=device, dtype=dtype)

    def reset_parameters(self) -> None:
        """Draw the map again (the permutations only when they hold no values, e.g. after ``to_empty()``)."""
        self.projection.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., in_features)`` → ``(..., n_features)``."""
        v = self.projection(x)
        return torch.cat([torch.cos(v), torch.sin(v)], dim=-1) * (1.0 / math.sqrt(v.shape[-1]))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, n_features={self.n_features}, kernel={self.kernel!r}, sigma={self.sigma}"


def random_features(x: torch.Tensor, n_features: int, *, kernel: str = "rbf", sigma: float = 1.0, seed: int = 0) -> torch.Tensor:
    """Random features ``z(x)`` of :class:`RandomFeatures`, ``(..., in) → (..., n_features)``, drawn from ``seed``.

    Calls with the same ``seed``, ``n_features``, ``kernel``, ``sigma`` and input size use the same map (drawn on
    the CPU, whatever ``x``'s device), so ``random_features(x, …) @ random_features(y, …).T`` approximates the
    kernel matrix between the rows of ``x`` and ``y``. Torch's global RNG is left untouched.
    """
    if not isinstance(x, torch.Tensor) or x.dim() == 0:
        raise ValueError("random_features expects a tensor of shape (..., in_features)")
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = RandomFeatures(x.shape[-1], n_features, kernel=kernel, sigma=sigma, dtype=dtype)
    return module.to(x.device)(x)
