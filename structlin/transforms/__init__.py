"""Fast, differentiable transforms: DCT-II/III over the last dimension (:func:`dct`, :func:`idct`) or any set of
dimensions (:func:`dctn`, :func:`idctn`), DCT-I (:func:`dct1`, :func:`idct1`) and Walsh-Hadamard (:func:`fwht`).

Each is a ``torch.library`` custom op (``structlin::dct``, ``structlin::idct``, ``structlin::dctn``,
``structlin::idctn``, ``structlin::dct1``, ``structlin::fwht``) with an analytic backward, so
``torch.compile(fullgraph=True)`` runs it without graph breaks and ``torch.utils.flop_counter.FlopCounterMode``
counts it with the formulas in :mod:`structlin.costs`.

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
from .dct1 import dct1, idct1
from .dctn import dctn, idctn
from .hadamard import fwht, fwht_butterfly, next_power_of_2

__all__ = ["dct", "idct", "dctn", "idctn", "dct1", "idct1", "fwht", "fwht_butterfly", "next_power_of_2",
           "native_kernels", "native_status"]
