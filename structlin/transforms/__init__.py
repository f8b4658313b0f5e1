"""Fast, differentiable transforms over the last dimension: DCT-II/III and Walsh-Hadamard.

Each is a ``torch.library`` custom op (``structlin::dct``, ``structlin::idct``, ``structlin::fwht``) with an
analytic backward, so ``torch.compile(fullgraph=True)`` runs it without graph breaks and
``torch.utils.flop_counter.FlopCounterMode`` counts it with the formulas in :mod:`structlin.costs`.

Under ``torch.func`` transforms (``grad``, ``jacrev``, ``jacfwd``, ``jvp``, ``vmap``, ``hessian``, and their
compositions), forward-mode AD (``torch.autograd.forward_ad``) and the vectorized ``torch.autograd.functional``
Jacobians, every transform here (and :mod:`~structlin.transforms.acdc`, :mod:`~structlin.transforms.fastfood`)
runs a composite form instead of its custom op: the same function in differentiable PyTorch ops, which those
transforms handle with their own rules — exact derivatives of every order and batching without per-sample loops.
A custom op called directly (``torch.ops.structlin.*``) under them raises instead of dropping tangents. See
:mod:`structlin.transforms._backend`.
"""

from ._backend import native_kernels, native_status
from .dct import dct, idct
from .hadamard import fwht, fwht_butterfly

__all__ = ["dct", "idct", "fwht", "fwht_butterfly", "native_kernels", "native_status"]
