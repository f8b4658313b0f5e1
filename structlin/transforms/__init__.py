"""Fast, differentiable transforms over the last dimension: DCT-II/III and Walsh-Hadamard.

Each is a ``torch.library`` custom op (``structlin::dct``, ``structlin::idct``, ``structlin::fwht``) with an
analytic backward, so ``torch.compile(fullgraph=True)`` runs it without graph breaks and
``torch.utils.flop_counter.FlopCounterMode`` counts it with the formulas in :mod:`structlin.costs`.
"""

from ._backend import native_kernels, native_status
from .dct import dct, idct
from .hadamard import fwht, fwht_butterfly

__all__ = ["dct", "idct", "fwht", "fwht_butterfly", "native_kernels", "native_status"]
