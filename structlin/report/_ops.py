"""The FLOP formula of each op a model runs: what the report's counting mode reads.

Where a formula comes from, in order (:func:`formula_for`):

1. data movement — views, copies, gathers, indexing, concatenation, padding, creation of constant or random
   tensors — is 0, by the explicit list :data:`DATA_MOVEMENT` (extend it with :func:`register_data_movement`);
2. structlin's own formulas: arithmetic (pointwise ops, reductions, matmuls, FFTs) in ``_math_ops.py``, the
   kernels behind standard layers (convolutions, norms, softmax, attention, embeddings, pooling, resampling,
   losses) in ``_layer_ops.py``; their conventions are stated there and in ``docs/report.md``;
3. any other op with a formula registered with ``torch.utils.flop_counter`` (structlin's transforms register
   theirs; users can register formulas for their own custom ops) is counted by that formula;
4. anything else has no formula: the counting mode runs its decomposition when it has one, and otherwise
   reports it as *unsupported* (its FLOPs are unknown, never a silent 0).
"""

from __future__ import annotations

from typing import Callable

import torch

from . import _layer_ops, _math_ops
from ._call import Call

__all__ = ["formula_for", "DATA_MOVEMENT", "register_data_movement", "op_name"]

aten = torch.ops.aten

#: Ops that only move, select, reshape or create data: 0 FLOPs.
DATA_MOVEMENT: set = set()

_DATA_NAMES = """
view _unsafe_view reshape expand expand_as permute t transpose squeeze unsqueeze select slice narrow
index_select gather cat stack clone copy_ copy _to_copy to detach alias as_strided contiguous flip roll
constant_pad_nd pad reflection_pad1d reflection_pad2d reflection_pad3d replication_pad1d replication_pad2d
replication_pad3d index _unsafe_index split split_with_sizes unbind chunk unsafe_split unsafe_split_with_sizes
unsafe_chunk zeros zeros_like ones ones_like eye empty empty_like empty_strided new_zeros
new_empty new_ones new_full new_empty_strided full full_like fill_ fill zero_ arange scalar_tensor
select_backward slice_backward slice_scatter select_scatter as_strided_scatter view_as_real view_as_complex
_conj _neg_view _reshape_alias lift_fresh lift_fresh_copy masked_fill masked_fill_ where repeat unfold
permute_copy t_copy view_copy transpose_copy unsqueeze_copy squeeze_copy expand_copy _unsafe_view_copy
scatter scatter_ set_ resize_ diagonal diag_embed tril triu _local_scalar_dense
item is_same_size equal embedding randn rand randint randperm normal_ uniform_ bernoulli_ random_ empty_permuted
randn_like rand_like randint_like bernoulli normal exponential_
squeeze_ unsqueeze_ t_ transpose_ swapdims_ swapaxes_ as_strided_ detach_
pixel_shuffle pixel_unshuffle channel_shuffle native_channel_shuffle max_unpool2d max_unpool3d im2col
upsample_nearest1d upsample_nearest2d upsample_nearest3d _upsample_nearest_exact1d _upsample_nearest_exact2d
_upsample_nearest_exact3d take_along_dim
""".split()

for _name in _DATA_NAMES:
    if hasattr(aten, _name):
        DATA_MOVEMENT.add(getattr(aten, _name))
if hasattr(torch.ops, "structlin") and hasattr(torch.ops.structlin, "gather_last"):
    DATA_MOVEMENT.add(torch.ops.structlin.gather_last)

_FORMULAS: dict = {
    getattr(aten, name): formula
    for name, formula in {**_math_ops.FORMULAS, **_layer_ops.FORMULAS}.items()
    if hasattr(aten, name)
}


def register_data_movement(op) -> None:
    """Declare an op (an ``OpOverloadPacket`` such as ``torch.ops.mylib.shuffle``) as data movement: 0 FLOPs."""
    DATA_MOVEMENT.add(op)


def op_name(func) -> str:
    """``"aten.mm"`` for ``aten.mm.default``: the op's overload packet, the key of ``by_operator()``."""
    return str(getattr(func, "_overloadpacket", func))


def formula_for(func) -> Callable | None:
    """The FLOP formula ``formula(args, kwargs, out) -> int | None`` of an op, or ``None`` if it has none.

    ``None`` from the formula itself means "no formula for these arguments" (e.g. a complex ``exp``).
    """
    packet = getattr(func, "_overloadpacket", func)
    if packet in DATA_MOVEMENT:
        return _zero
    if packet in _FORMULAS:
        formula = _FORMULAS[packet]
        return lambda args, kwargs, out: formula(Call(func, args, kwargs, out))
    from torch.utils.flop_counter import flop_registry

    if packet in flop_registry:
        registered = flop_registry[packet]
        return lambda args, kwargs, out: registered(*args, **kwargs, out_val=out)
    return None


def _zero(args, kwargs, out):
    return 0
